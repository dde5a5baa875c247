//! When each call is meant to be sent, and which instant its latency is
//! measured from.
//!
//! Closed loop: a worker sends the next call as soon as the previous one
//! finishes, and latency is measured from the real send time.
//!
//! Open loop (`--rate R`): the `K` workers share one global schedule of
//! evenly spaced sends, worker `i` owning slots `i, i+K, i+2K, …`, so the
//! offered load is `R` per second whatever the latency. A worker that is still
//! waiting for its previous reply when its slot comes is *behind*; the delay
//! is the server's fault, so latency is measured from the slot's intended
//! time (coordinated-omission correction, as wrk2 and HdrHistogram do). A
//! worker that was idle but woke late (the tokio timer ticks in whole
//! milliseconds, or the load core was busy) is the generator's fault, so its
//! latency is measured from the real send time instead.

use std::time::{Duration, Instant};

/// How calls are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// Fixed concurrency: send again as soon as the reply is in.
    Closed,
    /// Fixed total rate in calls per second over all workers.
    Open { rate: f64 },
}

/// One worker's schedule.
#[derive(Clone, Debug)]
pub struct Slots {
    start: Instant,
    /// Interval between two slots of the same worker.
    period: Duration,
    /// This worker's first slot, after `start`.
    offset: Duration,
    next: u64,
}

impl Slots {
    /// Worker `index` of `workers` sharing `rate` calls per second from `start`.
    pub fn new(start: Instant, rate: f64, index: usize, workers: usize) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let workers = workers.max(1) as f64;
        Self {
            start,
            period: Duration::from_secs_f64(workers / rate),
            offset: Duration::from_secs_f64(index as f64 / rate),
            next: 0,
        }
    }

    /// The intended send time of the next slot; advances the schedule.
    pub fn next_slot(&mut self) -> Instant {
        let n = u32::try_from(self.next).unwrap_or(u32::MAX);
        self.next = self.next.saturating_add(1);
        self.start + self.offset + self.period.saturating_mul(n)
    }
}

/// The instant a call's latency counts from.
///
/// `intended` is the slot time (open loop) or `None` (closed loop);
/// `prev_done` is when this worker's previous call finished; `sent` is when
/// this call actually went out.
pub fn latency_origin(intended: Option<Instant>, prev_done: Instant, sent: Instant) -> Instant {
    match intended {
        // Behind schedule: the server kept us busy past the slot.
        Some(slot) if prev_done > slot => slot,
        // Idle and on time (or woke late on our own account).
        Some(_) => sent,
        None => sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_interleave_workers_at_the_global_rate() {
        let t0 = Instant::now();
        // 4 workers at 1000/s: worker 1 owns t = 1ms, 5ms, 9ms, …
        let mut w1 = Slots::new(t0, 1000.0, 1, 4);
        let got: Vec<Duration> = (0..3).map(|_| w1.next_slot() - t0).collect();
        let want = [1, 5, 9].map(Duration::from_millis);
        for (g, w) in got.iter().zip(want) {
            let diff = g.abs_diff(w);
            assert!(diff < Duration::from_micros(1), "{g:?} vs {w:?}");
        }
    }

    #[test]
    fn all_workers_together_send_rate_calls_per_second() {
        let t0 = Instant::now();
        let workers = 8;
        let mut all: Vec<Instant> = Vec::new();
        for i in 0..workers {
            let mut s = Slots::new(t0, 400.0, i, workers);
            for _ in 0..50 {
                all.push(s.next_slot());
            }
        }
        all.sort();
        // 400 slots at 400/s span just under one second, evenly spaced.
        let span = *all.last().unwrap() - all[0];
        assert!(
            span.abs_diff(Duration::from_micros(997_500)) < Duration::from_micros(10),
            "{span:?}"
        );
        for w in all.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap.abs_diff(Duration::from_micros(2500)) < Duration::from_micros(2),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn behind_schedule_counts_from_the_intended_slot() {
        let t0 = Instant::now();
        let slot = t0 + Duration::from_millis(10);
        let prev_done = t0 + Duration::from_millis(30); // server was slow
        let sent = prev_done;
        assert_eq!(latency_origin(Some(slot), prev_done, sent), slot);
    }

    #[test]
    fn late_wakeup_of_an_idle_worker_counts_from_the_send() {
        let t0 = Instant::now();
        let slot = t0 + Duration::from_millis(10);
        let prev_done = t0 + Duration::from_millis(2); // idle long before the slot
        let sent = t0 + Duration::from_micros(10_900); // timer fired 0.9 ms late
        assert_eq!(latency_origin(Some(slot), prev_done, sent), sent);
    }

    #[test]
    fn closed_loop_counts_from_the_send() {
        let t0 = Instant::now();
        let sent = t0 + Duration::from_millis(1);
        assert_eq!(latency_origin(None, t0, sent), sent);
    }
}
