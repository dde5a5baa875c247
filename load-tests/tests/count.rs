//! Counted runs: exactly the planned calls happen between the hooks (the
//! backend counts what it received), a failed call invalidates the result,
//! and, with valgrind installed, the callgrind hooks measure a real process
//! (the raw benchmark backend under callgrind) the same in two rounds.

// Test support code: a failed setup should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use ztgate_loadtest::callgrind::{self, Control};
use ztgate_loadtest::conn::Endpoint;
use ztgate_loadtest::count::{self, Hooks, Measured, Plan};
use ztgate_loadtest::engine::Workload;
use ztgate_loadtest::grpc::Method;
use ztgate_loadtest::schedule::Pacing;
use ztgate_loadtest::token::TokenSource;

fn workload(fail_code: u32) -> Workload {
    Workload {
        method: Method::Get,
        payload: 64,
        stream_count: 0,
        fail_code,
        connections: 3,
        streams: 5,
        pacing: Pacing::Closed,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        call_timeout: Duration::from_secs(20),
        headers: Vec::new(),
    }
}

/// Records how many requests the backend had received at each hook.
struct Seen {
    requests: Arc<AtomicU64>,
    log: Vec<(&'static str, u32, u64)>,
}

impl Hooks for Seen {
    fn before(&mut self, round: u32) -> Result<(), String> {
        self.log
            .push(("before", round, self.requests.load(Ordering::SeqCst)));
        Ok(())
    }
    fn after(&mut self, round: u32) -> Result<Option<Measured>, String> {
        self.log
            .push(("after", round, self.requests.load(Ordering::SeqCst)));
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_planned_calls_run_between_the_hooks() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    tokio::spawn(ztgate_loadtest::backend::serve_raw_counted(
        l,
        "count".into(),
        Some(requests.clone()),
    ));
    let mut seen = Seen {
        requests,
        log: Vec::new(),
    };
    // 101 and 257: not multiples of the 15 workers, so the last calls of
    // a phase are shared unevenly and a worker-side count would show it.
    let plan = Plan {
        warmup_calls: 101,
        calls: 257,
        rounds: 2,
    };
    let o = count::run(
        Endpoint::plain(addr),
        &workload(0),
        TokenSource::None,
        plan,
        &mut seen,
    )
    .await
    .unwrap();
    assert_eq!(
        seen.log,
        vec![
            ("before", 1, 101),
            ("after", 1, 101 + 257),
            ("before", 2, 101 + 257),
            ("after", 2, 101 + 2 * 257),
        ]
    );
    assert_eq!((o.warmup.calls, o.warmup.ok), (101, 101));
    for r in &o.rounds {
        assert_eq!((r.phase.calls, r.phase.ok), (257, 257));
        assert!(r.phase.errors.is_empty(), "{:?}", r.phase.errors);
    }
    assert_eq!(o.invalid_reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_makes_the_result_invalid() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(ztgate_loadtest::backend::serve_tonic(l, "count".into()));
    let plan = Plan {
        warmup_calls: 5,
        calls: 20,
        rounds: 1,
    };
    let o = count::run(
        Endpoint::plain(addr),
        &workload(16),
        TokenSource::None,
        plan,
        &mut count::NoHooks,
    )
    .await
    .unwrap();
    assert_eq!(o.rounds[0].phase.calls, 20);
    assert_eq!(o.rounds[0].phase.ok, 0);
    assert_eq!(o.rounds[0].phase.errors["UNAUTHENTICATED"], 20);
    let why = o.invalid_reason().unwrap();
    assert!(why.contains("warm-up: 5 of 5 calls failed"), "{why}");
    assert!(why.contains("round 1: 20 of 20 calls failed"), "{why}");
}

/// Ends the valgrind'd backend by PID when the test ends, pass or fail,
/// and removes the FIFOs vgdb left for it (a killed valgrind keeps them).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let tag = format!("-{}-by-", self.0.id());
        let tmp =
            std::env::var_os("TMPDIR").map_or_else(|| "/tmp".into(), std::path::PathBuf::from);
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("vgdb-pipe-") && name.contains(&tag) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs valgrind (run.sh --callgrind installs it): cargo test -p ztgate-loadtest --test count -- --ignored"]
async fn callgrind_counts_the_rounds_alike() {
    let dir = std::env::temp_dir().join(format!("ztgate-cg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("benchd.out");
    let port = ztgate_testkit::harness::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new("valgrind")
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(env!("CARGO_BIN_EXE_ztgate-benchd"))
        .args(["--mode", "raw", "--threads", "1", "--listen"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind is installed");
    let proc = Proc(child);
    let up = ztgate_testkit::wait::eventually(Duration::from_secs(120), async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "the valgrind'd backend never listened on {addr}");
    let calls = 300;
    let mut control = Control {
        program: "callgrind_control".into(),
        pid: proc.0.id(),
        out: Some(out.clone()),
        calls,
    };
    let plan = Plan {
        warmup_calls: 100,
        calls,
        rounds: 2,
    };
    let o = count::run(
        Endpoint::plain(addr),
        &workload(0),
        TokenSource::None,
        plan,
        &mut control,
    )
    .await
    .unwrap();
    assert_eq!(o.invalid_reason(), None);
    let m: Vec<&Measured> = o
        .rounds
        .iter()
        .map(|r| r.measured.as_ref().unwrap())
        .collect();
    assert_ne!(m[0].dump, m[1].dump, "one dump per round");
    for x in &m {
        // The raw backend does real h2 work per call: thousands of
        // instructions, not a few and not millions.
        assert!((2_000.0..2_000_000.0).contains(&x.ir_per_call), "{x:?}");
    }
    let spread = (m[0].ir_per_call - m[1].ir_per_call).abs() / m[0].ir_per_call;
    assert!(
        spread < 0.02,
        "rounds differ by {:.2}%: {m:?}",
        spread * 100.0
    );
    // The dump reads whole: functions add up to its total, and the h2
    // server is where a good share of them go.
    let p = callgrind::format::read(std::path::Path::new(&m[0].dump)).unwrap();
    assert_eq!(p.total_ir, m[0].total_ir);
    assert_eq!(p.self_sum(), p.total_ir);
    let (groups, top) =
        callgrind::report::profile_of(std::path::Path::new(&m[0].dump), calls).unwrap();
    assert!(
        groups.iter().any(|g| g.group == "h2" && g.share > 0.05),
        "{groups:?}"
    );
    assert!(!top.is_empty());
    drop(proc);
    let _ = std::fs::remove_dir_all(&dir);
}
