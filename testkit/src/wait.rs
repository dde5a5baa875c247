//! Waiting for something to happen, bounded, instead of sleeping for a
//! guessed time: a fixed sleep is too short on a loaded machine (a flaky
//! test) and too long everywhere else (a slow suite).

use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Check `f` until it is true or `limit` passes; whether it became true.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// [`eventually`] for blocking code (`std::process`, plain threads).
pub fn eventually_blocking(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}
