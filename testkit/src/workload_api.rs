//! A SPIFFE Workload API server on a Unix socket: what a SPIRE agent
//! serves to the workloads of its node, for tests of ztgate's
//! `spiffe.workload_api`.
//!
//! It speaks the standard `workload.proto` (`proto/workload.proto`, X.509
//! profile) with tonic, and holds to the rules a SPIRE agent enforces: a
//! call without the metadata `workload.spiffe.io: true` is refused with
//! INVALID_ARGUMENT (the header proves the caller is a workload asking on
//! purpose, not a browser or a confused proxy reaching the socket), and each
//! stream sends the current material at once, then a new message on every
//! change. The material is real: certificates from [`crate::pki`], DER as on
//! the wire.
//!
//! [`WorkloadApi::push`] is a rotation, [`WorkloadApi::stop`] an agent going
//! down (streams end with UNAVAILABLE, the socket goes away) and
//! [`WorkloadApi::restart`] the agent coming back on the same socket with
//! the last material pushed.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::pki::{Ca, Issued};

/// Generated code of `proto/workload.proto` (no package: the standard
/// serves `/SpiffeWorkloadAPI/<Method>`).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod wire {
    tonic::include_proto!("_");
}

use wire::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
pub use wire::{X509BundlesResponse, X509svid, X509svidResponse};

/// The metadata every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// One X.509-SVID as the agent sends it: `issued` (leaf) under `spiffe_id`,
/// with the bundle of its trust domain (`bundle`'s CA certificates).
pub fn svid(spiffe_id: &str, issued: &Issued, bundle: &[&Ca]) -> X509svid {
    X509svid {
        spiffe_id: spiffe_id.to_owned(),
        x509_svid: issued.der.clone(),
        x509_svid_key: pem_der(&issued.key_pem),
        bundle: bundle_der(bundle),
        hint: String::new(),
    }
}

/// An `X509SVIDResponse`: `svids` (the first is the default identity) and
/// federated bundles keyed by trust domain name (`partner.test`; sent as
/// the trust domain's SPIFFE ID, `spiffe://partner.test`).
pub fn update(svids: Vec<X509svid>, federated: &[(&str, &[&Ca])]) -> X509svidResponse {
    X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: federated
            .iter()
            .map(|(td, cas)| (format!("spiffe://{td}"), bundle_der(cas)))
            .collect(),
    }
}

/// DER certificates concatenated, as the Workload API carries a bundle.
pub fn bundle_der(cas: &[&Ca]) -> Vec<u8> {
    cas.iter().flat_map(|c| c.cert.der().to_vec()).collect()
}

/// The DER inside a single-block PEM (the test PKI's PKCS#8 keys).
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}

/// What `FetchX509Bundles` sends for an `X509SVIDResponse`: the bundle of
/// each SVID's trust domain and the federated ones, keyed by trust domain
/// SPIFFE ID.
pub fn bundles_of(resp: &X509svidResponse) -> X509BundlesResponse {
    let mut bundles = resp.federated_bundles.clone();
    for s in &resp.svids {
        let td = s
            .spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        bundles
            .entry(format!("spiffe://{td}"))
            .or_insert_with(|| s.bundle.clone());
    }
    X509BundlesResponse {
        crl: resp.crl.clone(),
        bundles,
    }
}

/// The material served, shared by every stream.
struct Material {
    svids: watch::Sender<Option<X509svidResponse>>,
    /// Calls refused for want of the security header.
    refused: AtomicU64,
    /// Streams opened (calls accepted).
    streams: AtomicU64,
}

/// A serving instance: ended by [`WorkloadApi::stop`].
struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A Workload API server on a Unix socket; stopped (socket removed) on drop.
pub struct WorkloadApi {
    pub socket: PathBuf,
    material: Arc<Material>,
    serving: Mutex<Option<Serving>>,
}

impl WorkloadApi {
    /// Serve at `socket` (a stale file there is removed), with no material
    /// yet: streams open and wait for the first [`Self::push`], as an agent
    /// does before it has an SVID for the caller.
    pub async fn start(socket: &Path) -> anyhow::Result<Self> {
        let api = Self::new(socket);
        api.restart().await?;
        Ok(api)
    }

    /// Not serving yet (see [`Self::restart`]): the socket does not exist,
    /// as while an agent is down.
    pub fn new(socket: &Path) -> Self {
        let (svids, _) = watch::channel(None);
        Self {
            socket: socket.to_owned(),
            material: Arc::new(Material {
                svids,
                refused: AtomicU64::new(0),
                streams: AtomicU64::new(0),
            }),
            serving: Mutex::new(None),
        }
    }

    /// Serve the standard X.509 material; every open stream gets it now.
    pub fn push(&self, resp: X509svidResponse) {
        self.material.svids.send_replace(Some(resp));
    }

    /// Calls refused because they lacked `workload.spiffe.io: true`.
    pub fn refused_calls(&self) -> u64 {
        self.material.refused.load(Ordering::Relaxed)
    }

    /// Streams accepted so far (each reconnection of a client is one).
    pub fn streams_opened(&self) -> u64 {
        self.material.streams.load(Ordering::Relaxed)
    }

    /// Go down: open streams end with UNAVAILABLE, the listener closes and
    /// the socket file is removed. The material pushed is kept for
    /// [`Self::restart`].
    pub async fn stop(&self) {
        let serving = self.serving.lock().ok().and_then(|mut s| s.take());
        if let Some(Serving { stop, mut task }) = serving {
            stop.send_replace(true);
            // Streams end at once, so the graceful shutdown is quick; a
            // stuck connection does not hold the test.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// (Re)start serving on the same socket with the material last pushed.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = tokio::net::UnixListener::bind(&self.socket)
            .with_context(|| format!("bind {}", self.socket.display()))?;
        let (stop, stopped) = watch::channel(false);
        let service = Agent {
            material: self.material.clone(),
            stopped: stopped.clone(),
        };
        let mut shutdown = stopped;
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SpiffeWorkloadApiServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
        });
        if let Ok(mut s) = self.serving.lock() {
            *s = Some(Serving { stop, task });
        }
        Ok(())
    }
}

impl Drop for WorkloadApi {
    fn drop(&mut self) {
        if let Some(s) = self.serving.lock().ok().and_then(|mut s| s.take()) {
            s.stop.send_replace(true);
            s.task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The service itself.
struct Agent {
    material: Arc<Material>,
    stopped: watch::Receiver<bool>,
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

impl Agent {
    /// SPIRE's check: the caller must say it speaks the Workload API.
    // tonic's `Status` is what the handlers return it as.
    #[allow(clippy::result_large_err)]
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let ok = req
            .metadata()
            .get(SECURITY_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        if ok {
            self.material.streams.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            self.material.refused.fetch_add(1, Ordering::Relaxed);
            Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }

    /// A stream of `map(material)`: the current one (once there is one),
    /// then each change, until the client goes or the agent stops.
    fn follow<T: Send + 'static>(
        &self,
        map: impl Fn(&X509svidResponse) -> T + Send + Sync + 'static,
    ) -> Stream<T> {
        let mut material = self.material.svids.subscribe();
        let mut stopped = self.stopped.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let current = material.borrow_and_update().as_ref().map(&map);
                if let Some(m) = current {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                let stopping = tokio::select! {
                    changed = material.changed() => if changed.is_err() { return } else { false },
                    // Stopped, or the server gone: either way, end.
                    _ = stopped.wait_for(|s| *s) => true,
                    () = tx.closed() => return,
                };
                if stopping {
                    let _ = tx
                        .send(Err(Status::unavailable("agent is shutting down")))
                        .await;
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Agent {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<wire::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.admit(&req)?;
        Ok(Response::new(self.follow(Clone::clone)))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<wire::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit(&req)?;
        Ok(Response::new(self.follow(bundles_of)))
    }
}
