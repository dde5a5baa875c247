//! Command line: `run`, `check`, `explain`, `demo`, `probe`.

mod check;
mod demo;
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
    /// Start a throw-away PKI, two sample backends and the gateway on
    /// loopback, make real calls, and print what happened.
    Demo,
    /// GET an admin URL and exit 0 on 2xx: a health probe that needs no shell.
    Probe {
        /// e.g. http://127.0.0.1:9901/readyz
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            config,
            daemon,
            upgrade,
        } => run::run(&config, daemon, upgrade),
        Command::Check { config } => check::check(&config),
        Command::Demo => demo::demo(),
        Command::Probe { url, timeout } => probe::probe(&url, timeout),
    }
}
