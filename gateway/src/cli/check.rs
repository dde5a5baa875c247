//! `ztgate check -c FILE`: everything that can be checked offline.

use std::path::Path;
use std::process::ExitCode;

use crate::config;

pub fn check(path: &Path) -> ExitCode {
    match config::load_and_build(path, &ztgate_filter::Memory::new()) {
        Ok((_, st, rt)) => {
            println!(
                "{}: ok ({} filters: {}; {} upstreams; listener {}; admin {})",
                path.display(),
                rt.chain.names().count(),
                rt.chain.names().collect::<Vec<_>>().join(" → "),
                rt.pools.len(),
                st.listen,
                st.admin
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}
