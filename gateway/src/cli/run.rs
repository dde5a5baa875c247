//! `ztgate run -c FILE`: serve.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::audit::Audit;
use crate::config::{self, Static};
use crate::conn_limits::{self, AcceptGate};
use crate::drain::{Counted, OnSignal};
use crate::listener::Serve;
use crate::proxy::Gateway;
use crate::proxy_protocol::AcceptProxyHeader;
use crate::reload::Reloader;
use crate::state::Shared;
use crate::tls::{self, Handshake};
use crate::upstream::checker::HealthChecker;
use crate::{metrics, reload};

pub fn init_logging(st: &Static) {
    crate::logging::init(&st.log_level, st.log_format);
}

pub fn run(path: &Path, daemon: bool, upgrade: bool) -> ExitCode {
    let memory = ztgate_filter::Memory::new();
    let (loaded, st, rt) = match config::load_and_build(path, &memory) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Connection settings take effect on restart (like `listen`); a reload
    // that changes them says so.
    let request_header_timeout = st.request_header_timeout;
    let caps = conn_limits::Caps {
        total: st.max_connections,
        per_ip: st.max_connections_per_ip,
    };
    drop(loaded);
    init_logging(&st);
    metrics::init();
    reload::record_cert_expiry(&rt);

    let audit = match &st.audit {
        None => None,
        Some((out, queue, max_size)) => match Audit::start(out, *queue, *max_size) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("{}: audit.output: cannot open {out}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };

    let conf = ServerConf {
        threads: st.threads,
        daemon,
        pid_file: st.pid_file.clone(),
        upgrade_sock: st.upgrade_sock.clone(),
        grace_period_seconds: Some(st.grace_period.as_secs()),
        work_stealing: st.work_stealing,
        graceful_shutdown_timeout_seconds: Some(st.shutdown_timeout.as_secs().max(1)),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let shared = Shared::new(path.to_path_buf(), st.clone(), rt, audit, memory);

    // The gRPC listener: Pingora's proxy, each request counted for the
    // drain, each connection under the first-request deadline.
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway {
            shared: shared.clone(),
        },
    );
    let mut o = HttpServerOptions::default();
    o.h2_idle_timeout = Some(st.h2_idle_timeout);
    app.server_options = Some(o);
    // Pingora's bounded defaults (100 concurrent streams, 64 KiB header
    // list), with the header-list limit raised above the gateway's own so an
    // oversized list or token gets a gRPC answer from `request_filter`
    // instead of the h2 codec's bare 431 (see `H2_MAX_HEADER_LIST_SIZE`).
    let mut h2 = default_h2_options();
    h2.max_header_list_size(crate::proxy::H2_MAX_HEADER_LIST_SIZE);
    app.h2_options = Some(h2);
    let counted = Arc::new(Counted::new(app, shared.drain.clone()));
    let mut proxy = Service::new(
        "ztgate".to_string(),
        Serve::new(
            counted.clone(),
            shared.drain.clone(),
            request_header_timeout,
        ),
    );
    let handshake = Handshake {
        material: shared.material.clone(),
    };
    let tls = match tls::listener_settings(handshake, st.client_auth, st.min_version) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot set up TLS listener: {e}");
            return ExitCode::FAILURE;
        }
    };
    // No L4 read buffer under TLS: OpenSSL keeps its own record buffer, and
    // Pingora's default 64 KiB one beneath it cost 21 KiB of RSS per idle
    // connection with no measurable change in CPU per call.
    let listener = ListenerConfig::tcp(st.listen.to_string())
        .tls(tls)
        .l4_buffer(L4BufferSettings::default().read(0));
    proxy.add_listener(listener);
    // Before TLS: the drain and the connection caps, around the PROXY
    // protocol reader for trusted balancers (installed whatever
    // `listener.proxy_protocol` says: it reads the current runtime config
    // per connection, and does nothing when off or for an untrusted peer).
    proxy
        .endpoints()
        .set_pre_tls_callback(Arc::new(AcceptGate::new(
            conn_limits::Table::new(caps),
            shared.drain.clone(),
            AcceptProxyHeader::new(shared.clone()),
        )));

    // The admin listener.
    let mut admin = Service::new(
        "ztgate-admin".to_string(),
        HttpServer::new_app(Admin {
            shared: shared.clone(),
        }),
    );
    admin.threads = Some(1);
    admin.add_tcp(&st.admin.to_string());

    // Reload on SIGHUP and on file changes.
    let reloader = background_service("ztgate-reload", Reloader::new(shared.clone()));

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(reloader);
    // The SPIFFE Workload API's material into the listener, when configured.
    server.add_service(background_service(
        "ztgate-spiffe",
        crate::spiffe::apply::Applier::new(shared.clone()),
    ));
    // Active gRPC health checks of the pools in service.
    server.add_service(background_service(
        "ztgate-health",
        HealthChecker::new(shared.clone()),
    ));
    tracing::info!(listen = %st.listen, admin = %st.admin, "ztgate starting");
    // SIGTERM drains here (see `drain.rs`); SIGQUIT and SIGINT are Pingora's.
    server.run(RunArgs {
        shutdown_signal: Box::new(OnSignal {
            drain: shared.drain.clone(),
            grace: st.grace_period,
            exit_after: st.shutdown_timeout.max(std::time::Duration::from_secs(1)),
            idle: counted,
            before_exit: {
                let shared = shared.clone();
                Box::new(move |within| shared.tracing.finish(within))
            },
        }),
    });
    ExitCode::SUCCESS
}
