//! A real OCSP responder for tests: OpenSSL's own (`openssl ocsp`), run
//! once per request on the request's DER (`-reqin`/`-respout`) behind a
//! small HTTP/1.1 front bound to 127.0.0.1 (OpenSSL's `-port` mode binds
//! every interface). Its answers come from an OpenSSL CA index file that
//! the test edits ([`Responder::good`], [`Responder::revoke`]); a serial
//! not in the index is `unknown`. [`Responder::stop`] takes it down (the
//! port then refuses connections), [`Responder::resume`] brings it back on
//! the same port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::pki::{Ca, Issued, LeafSpec};

/// Who signs the responses.
pub enum Signer<'a> {
    /// A delegated responder certificate issued by the CA (OCSP-signing EKU).
    Delegated,
    /// The CA itself.
    Ca,
    /// Any certificate and key (a wrong signer, for negative tests).
    Other(&'a Issued),
}

/// The files `openssl ocsp` answers from.
#[derive(Clone, Debug)]
pub struct Files {
    pub dir: PathBuf,
    pub index: PathBuf,
    pub ca: PathBuf,
    pub signer: PathBuf,
    pub signer_key: PathBuf,
    /// `-nmin N` (nextUpdate N minutes on); `None`: `-ndays 1`.
    pub next_update_minutes: Option<u32>,
}

impl Files {
    /// Write the CA certificate, the signer's certificate and key and an
    /// empty index into `dir`.
    pub fn write(dir: &Path, ca: &Ca, signer: Signer<'_>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca_path = ca.write(dir, "ocsp-ca")?;
        let (signer, signer_key) = match signer {
            Signer::Delegated => ca
                .issue(&LeafSpec {
                    common_name: "ocsp responder".into(),
                    ocsp_signing: true,
                    ..LeafSpec::default()
                })?
                .write(dir, "ocsp-signer")?,
            Signer::Ca => {
                let key = dir.join("ocsp-signer-key.pem");
                std::fs::write(&key, ca.key_pem())?;
                (ca_path.clone(), key)
            }
            Signer::Other(i) => i.write(dir, "ocsp-signer")?,
        };
        let index = dir.join("index.txt");
        std::fs::write(&index, "")?;
        // Several certificates may share a subject (OpenSSL's default
        // refuses to load such an index).
        std::fs::write(dir.join("index.txt.attr"), "unique_subject = no\n")?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
            ca: ca_path,
            signer,
            signer_key,
            next_update_minutes: None,
        })
    }

    /// Run `openssl ocsp` on one DER request; the DER response.
    pub async fn answer(&self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let req = self.dir.join(format!("req-{n}.der"));
        let resp = self.dir.join(format!("resp-{n}.der"));
        tokio::fs::write(&req, request).await?;
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.arg("ocsp")
            .arg("-index")
            .arg(&self.index)
            .arg("-rsigner")
            .arg(&self.signer)
            .arg("-rkey")
            .arg(&self.signer_key)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-reqin")
            .arg(&req)
            .arg("-respout")
            .arg(&resp);
        match self.next_update_minutes {
            Some(m) => cmd.arg("-nmin").arg(m.to_string()),
            None => cmd.arg("-ndays").arg("1"),
        };
        let out = cmd.output().await.context("run openssl ocsp")?;
        let _ = tokio::fs::remove_file(&req).await;
        if !out.status.success() {
            bail!(
                "openssl ocsp failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let der = tokio::fs::read(&resp).await?;
        let _ = tokio::fs::remove_file(&resp).await;
        Ok(der)
    }
}

/// A running responder.
pub struct Responder {
    pub addr: SocketAddr,
    files: Arc<Files>,
    /// Serial (OpenSSL's hex) → index line.
    entries: Mutex<BTreeMap<String, String>>,
    requests: Arc<AtomicUsize>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Responder {
    /// Answer for `ca`'s certificates from a free loopback port.
    pub async fn start(dir: &Path, ca: &Ca, signer: Signer<'_>) -> anyhow::Result<Self> {
        Self::start_with(Files::write(dir, ca, signer)?).await
    }

    pub async fn start_with(files: Files) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let r = Self {
            addr: listener.local_addr()?,
            files: Arc::new(files),
            entries: Mutex::new(BTreeMap::new()),
            requests: Arc::new(AtomicUsize::new(0)),
            task: Mutex::new(None),
        };
        r.serve(listener);
        Ok(r)
    }

    /// The URL to put in certificates' AIA.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How many OCSP requests arrived so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Answer `good` for `cert` from now on.
    pub fn good(&self, cert: &Issued) -> anyhow::Result<()> {
        let serial = serial_hex(&cert.serial);
        let line = format!("V\t{}\t\t{serial}\tunknown\t/CN={serial}\n", expiry());
        self.set(serial, line)
    }

    /// Answer `revoked` for `cert` from now on.
    pub fn revoke(&self, cert: &Issued) -> anyhow::Result<()> {
        let serial = serial_hex(&cert.serial);
        let now = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let line = format!(
            "R\t{}\t{}\t{serial}\tunknown\t/CN={serial}\n",
            expiry(),
            asn1_utc(now)
        );
        self.set(serial, line)
    }

    fn set(&self, serial: String, line: String) -> anyhow::Result<()> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        entries.insert(serial, line);
        let text: String = entries.values().cloned().collect();
        // Replace by rename: a concurrent `openssl ocsp` reads a whole file.
        let tmp = self.files.index.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.files.index)?;
        Ok(())
    }

    /// Take the responder down: its port refuses connections.
    pub fn stop(&self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }

    /// Serve again on the same port.
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let files = self.files.clone();
        let requests = self.requests.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept loop
            // also ends the ones in progress.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (files, requests) = (files.clone(), requests.clone());
                        conns.spawn(async move {
                            if let Err(e) = one_exchange(stream, &files, &requests).await {
                                tracing::debug!(error = %e, "OCSP test responder");
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        if let Ok(mut t) = self.task.lock() {
            if let Some(old) = t.replace(task) {
                old.abort();
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 POST with a DER OCSP request; answered, then closed.
async fn one_exchange(
    mut stream: TcpStream,
    files: &Files,
    requests: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the request head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("request head too long");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("post ") {
        stream
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the request body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let der = files.answer(&body[..len]).await?;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        der.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&der).await?;
    stream.shutdown().await?;
    Ok(())
}

/// A serial as OpenSSL's index writes it: upper-case hex, no leading zero
/// bytes.
pub fn serial_hex(serial: &[u8]) -> String {
    let trimmed: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    if trimmed.is_empty() {
        return "00".into();
    }
    trimmed.iter().map(|b| format!("{b:02X}")).collect()
}

fn expiry() -> String {
    asn1_utc(time::OffsetDateTime::now_utc() + time::Duration::days(1))
}

/// `YYMMDDHHMMSSZ`, the index file's time format.
fn asn1_utc(t: time::OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
