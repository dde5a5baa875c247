//! `ztgate-benchd`: the benchmark backend, `orders.v1.Orders` over h2c.
//!
//! `--mode tonic` (default) serves the service on tonic's server, the
//! backend the proxies are measured against; `--mode raw` serves the same replies
//! straight from `h2`, for measuring the load generator's own ceiling.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Tonic,
    Raw,
}

#[derive(Parser)]
#[command(
    name = "ztgate-benchd",
    version,
    about = "h2c orders.v1.Orders benchmark backend"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value = "tonic")]
    mode: Mode,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Name reported in replies.
    #[arg(long, default_value = "benchd")]
    name: String,
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    match cli.mode {
        Mode::Tonic => {
            let l = tokio::net::TcpListener::bind(cli.listen).await?;
            eprintln!("ztgate-benchd (tonic) listening on {}", l.local_addr()?);
            tokio::select! {
                r = ztgate_loadtest::backend::serve_tonic(l, cli.name.clone()) => r?,
                r = tokio::signal::ctrl_c() => r?,
            }
        }
        Mode::Raw => {
            let l = tokio::net::TcpListener::bind(cli.listen).await?;
            eprintln!("ztgate-benchd (raw) listening on {}", l.local_addr()?);
            tokio::select! {
                r = ztgate_loadtest::backend::serve_raw(l, cli.name.clone()) => r?,
                r = tokio::signal::ctrl_c() => r?,
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(&cli))
}
