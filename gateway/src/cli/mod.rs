//! Command line: `run`, `check`, `explain`, `demo`, `probe`.

mod check;
#[cfg(feature = "demo")]
mod demo;
mod explain;
mod probe;
pub mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ztgate — zero-trust L7 gateway for gRPC (mTLS + JWT + device + scope routing).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve with the given config.
    Run {
        /// The ztgate config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Run in the background (Pingora daemon mode).
        #[arg(short, long)]
        daemon: bool,
        /// Take the listening sockets over from a running ztgate (graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config offline; print each problem as FILE:LINE: key: message.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Run the filter chain offline on a described request and print every
    /// filter's verdict, the identity, token, fingerprint, route and result.
    /// Exit 0 when the request would be forwarded, 2 when denied.
    Explain {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// gRPC path, e.g. /orders.v1.Orders/Get
        #[arg(long)]
        path: String,
        /// Client certificate (PEM) as presented in the handshake.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// File with the bearer token (or a whole `Bearer …`/`DPoP …` value).
        #[arg(long)]
        token: Option<PathBuf>,
        /// Extra request header, NAME:VALUE (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The connection's peer address.
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// :authority of the request.
        #[arg(long, default_value = "localhost")]
        authority: String,
        /// JA4 of the client's ClientHello (not observable offline).
        #[arg(long)]
        ja4: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Start a throw-away PKI, two sample backends and the gateway on
    /// loopback, make real calls, and print what happened.
    #[cfg_attr(
        not(feature = "demo"),
        command(
            about = "Not in this build (built without the `demo` feature)",
            long_about = None
        )
    )]
    Demo {
        /// Keep a working setup in DIR: the PKI, the IdP's keys (as a static
        /// keys file), tokens valid for a day, the `ztgate.yaml` the demo
        /// ran and a README.md with commands to run it yourself.
        #[arg(long, value_name = "DIR")]
        keep: Option<std::path::PathBuf>,
        #[command(subcommand)]
        action: Option<DemoAction>,
    },
    /// GET an admin URL and exit 0 on 2xx: a health probe that needs no shell.
    Probe {
        /// e.g. http://127.0.0.1:9901/readyz
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// What to do with a setup `ztgate demo --keep DIR` left behind.
#[derive(clap::Subcommand, Debug)]
pub enum DemoAction {
    /// Serve the sample gRPC backends at the addresses of the upstreams in
    /// a kept demo's config, until interrupted.
    Backends {
        /// The kept `ztgate.yaml`.
        #[arg(short, long)]
        config: std::path::PathBuf,
    },
    /// Make one gRPC call through a running gateway as a demo workload and
    /// print the answer.
    Call {
        /// The folder `--keep` wrote.
        #[arg(short, long)]
        dir: std::path::PathBuf,
        /// Client certificate: `web` (spiffe://acme.test/ns/shop/sa/web) or
        /// `partner` (spiffe://partner.test/…).
        #[arg(long = "as", default_value = "web")]
        who: String,
        /// Token file in DIR/tokens (`writer`, `reader`, `profile`), or `none`.
        #[arg(long, default_value = "reader")]
        token: String,
        /// gRPC path to call (unary, an `orders.v1.Request` message).
        #[arg(long, default_value = "/orders.v1.Orders/Get")]
        path: String,
    },
}

/// `ztgate demo` in a build without the `demo` feature (the production
/// image): the command stays known so that it can say why it is missing,
/// rather than clap calling it unrecognised.
#[cfg(not(feature = "demo"))]
mod demo {
    use std::process::ExitCode;

    pub fn demo(_keep: Option<std::path::PathBuf>, _action: Option<super::DemoAction>) -> ExitCode {
        eprintln!(
            "ztgate demo: this ztgate was built without the `demo` feature (a production \
             build, e.g. the container image), so it has no demo. Build with the default \
             features to get it: `cargo build -p ztgate` or scripts/demo.sh."
        );
        ExitCode::FAILURE
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
}

pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            config,
            daemon,
            upgrade,
        } => run::run(&config, daemon, upgrade),
        Command::Check { config } => check::check(&config),
        Command::Demo { keep, action } => demo::demo(keep, action),
        Command::Explain {
            config,
            path,
            cert,
            token,
            headers,
            client_ip,
            authority,
            ja4,
            format,
        } => explain::explain(explain::Request {
            config,
            path,
            authority,
            cert,
            token,
            headers,
            client_ip,
            ja4,
            json: matches!(format, Format::Json),
        }),
        Command::Probe { url, timeout } => probe::probe(&url, timeout),
    }
}
