//! `callgrind.md` / `callgrind.json`: instructions per call per target, the
//! ratios the issue sets targets for, how far the rounds of one target
//! agree, and where each target's instructions go (groups and top
//! functions of its first valid round).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::format::{self, FormatError};
use super::group::group;
use crate::count::CountResult;

/// HAProxy mTLS pass-through: the baseline of the mTLS-only targets.
pub const HAPROXY_MTLS: &str = "haproxy-mtls";
/// HAProxy mTLS + `jwt_verify`: the baseline of the JWT targets.
pub const HAPROXY_JWT: &str = "haproxy-jwt";

/// The baseline a target is compared with.
pub fn baseline_of(target: &str) -> Option<&'static str> {
    match target {
        "ztgate-mtls" | "nginx" => Some(HAPROXY_MTLS),
        t if t.starts_with("ztgate-") => Some(HAPROXY_JWT),
        _ => None,
    }
}

/// The instruction targets: (what, target, baseline, at most).
pub const LIMITS: [(&str, &str, &str, f64); 3] = [
    (
        "mTLS only ≤ 2.0× HAProxy mTLS",
        "ztgate-mtls",
        HAPROXY_MTLS,
        2.0,
    ),
    (
        "full chain, cached token ≤ 0.25× HAProxy-JWT",
        "ztgate-full",
        HAPROXY_JWT,
        0.25,
    ),
    (
        "full chain, new RS256 token each call ≤ 1.0× HAProxy-JWT",
        "ztgate-miss-rs256",
        HAPROXY_JWT,
        1.0,
    ),
];

/// The report's row order: each baseline before what is compared with it.
const ORDER: [&str; 9] = [
    HAPROXY_MTLS,
    "nginx",
    "ztgate-mtls",
    HAPROXY_JWT,
    "ztgate-full",
    "ztgate-miss-rs256",
    "ztgate-miss-es256",
    "ztgate-state-memory",
    "ztgate-state-redis",
];

/// One group's instructions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupCost {
    pub group: String,
    pub ir_per_call: f64,
    /// Share of the round's total.
    pub share: f64,
}

/// One function's self instructions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopFunction {
    pub function: String,
    pub group: String,
    pub ir_per_call: f64,
    pub share: f64,
}

/// One target's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetFigures {
    pub target: String,
    pub token: String,
    pub calls: u64,
    pub warmup_calls: u64,
    /// Instructions per call of each round (`None`: invalid or no dump).
    pub rounds: Vec<Option<f64>>,
    /// Mean of the valid rounds.
    pub ir_per_call: Option<f64>,
    /// (max − min) ÷ mean of the valid rounds, in percent.
    pub spread_pct: Option<f64>,
    pub baseline: Option<String>,
    pub vs_baseline: Option<f64>,
    pub invalid: Option<String>,
    /// From the first valid round's dump.
    pub groups: Vec<GroupCost>,
    pub top: Vec<TopFunction>,
    /// Why the groups are missing, if they are.
    pub profile_error: Option<String>,
}

/// One of the targets, checked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LimitCheck {
    pub what: String,
    pub target: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub at_most: f64,
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub targets: Vec<TargetFigures>,
    pub limits: Vec<LimitCheck>,
}

/// Functions listed per target.
const TOP: usize = 15;

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Groups and top functions of one dump.
pub fn profile_of(
    dump: &Path,
    calls: u64,
) -> Result<(Vec<GroupCost>, Vec<TopFunction>), FormatError> {
    let p = format::read(dump)?;
    let main = p
        .cmd
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let total = p.total_ir.max(1) as f64;
    let calls = calls.max(1) as f64;
    let mut by_group: HashMap<String, u64> = HashMap::new();
    let mut top = Vec::new();
    for f in &p.functions {
        let g = group(f, &main);
        if top.len() < TOP {
            top.push(TopFunction {
                function: f.name.clone(),
                group: g.clone(),
                ir_per_call: f.ir as f64 / calls,
                share: f.ir as f64 / total,
            });
        }
        *by_group.entry(g).or_default() += f.ir;
    }
    let mut groups: Vec<GroupCost> = by_group
        .into_iter()
        .map(|(group, ir)| GroupCost {
            group,
            ir_per_call: ir as f64 / calls,
            share: ir as f64 / total,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.group.cmp(&b.group))
    });
    Ok((groups, top))
}

/// Build the summary from the count results (dumps read from where the
/// results say they are).
pub fn summarize(results: &[CountResult]) -> Summary {
    let mut targets: Vec<TargetFigures> = results
        .iter()
        .map(|r| {
            let rounds: Vec<Option<f64>> = r
                .outcome
                .rounds
                .iter()
                .map(|x| {
                    x.measured
                        .as_ref()
                        .filter(|_| x.phase.valid())
                        .map(|m| m.ir_per_call)
                })
                .collect();
            let valid: Vec<f64> = rounds.iter().flatten().copied().collect();
            let avg = if r.invalid.is_some() {
                None
            } else {
                mean(&valid)
            };
            let spread = avg.filter(|_| valid.len() > 1).map(|m| {
                let max = valid.iter().copied().fold(f64::MIN, f64::max);
                let min = valid.iter().copied().fold(f64::MAX, f64::min);
                (max - min) / m * 100.0
            });
            let dump = r
                .outcome
                .rounds
                .iter()
                .find(|x| x.phase.valid())
                .and_then(|x| x.measured.as_ref());
            let (groups, top, profile_error) = match dump {
                Some(m) => match profile_of(Path::new(&m.dump), r.calls) {
                    Ok((g, t)) => (g, t, None),
                    Err(e) => (Vec::new(), Vec::new(), Some(e.to_string())),
                },
                None => (
                    Vec::new(),
                    Vec::new(),
                    Some("no valid round with a dump".into()),
                ),
            };
            TargetFigures {
                target: r.target.clone(),
                token: r.token.clone(),
                calls: r.calls,
                warmup_calls: r.warmup_calls,
                rounds,
                ir_per_call: avg,
                spread_pct: spread,
                baseline: baseline_of(&r.target).map(str::to_owned),
                vs_baseline: None,
                invalid: r.invalid.clone(),
                groups,
                top,
                profile_error,
            }
        })
        .collect();
    targets.sort_by_key(|t| {
        ORDER
            .iter()
            .position(|o| *o == t.target)
            .unwrap_or(ORDER.len())
    });
    let per_call: HashMap<String, f64> = targets
        .iter()
        .filter_map(|t| Some((t.target.clone(), t.ir_per_call?)))
        .collect();
    for t in &mut targets {
        t.vs_baseline = match (
            t.ir_per_call,
            t.baseline.as_ref().and_then(|b| per_call.get(b)),
        ) {
            (Some(a), Some(&b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
    }
    let limits = LIMITS
        .iter()
        .map(|&(what, target, baseline, at_most)| {
            let ratio = match (per_call.get(target), per_call.get(baseline)) {
                (Some(&a), Some(&b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            LimitCheck {
                what: what.into(),
                target: target.into(),
                baseline: baseline.into(),
                ratio,
                at_most,
                met: ratio.map(|r| r <= at_most),
            }
        })
        .collect();
    Summary { targets, limits }
}

fn k(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.1}k", v / 1000.0))
}

fn x(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}×"))
}

/// Render `callgrind.md`.
pub fn markdown(s: &Summary, machine: &str, skipped: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ztgate callgrind report: instructions per call\n");
    if !machine.trim().is_empty() {
        let _ = writeln!(out, "## Machine\n\n{}\n", machine.trim());
    }
    let rounds = s.targets.iter().map(|t| t.rounds.len()).max().unwrap_or(0);
    if let Some(t) = s.targets.first() {
        let _ = writeln!(
            out,
            "Each proxy ran under `valgrind --tool=callgrind --instr-atstart=no`; after {} uninstrumented warm-up calls, \
             instrumentation was switched on (`callgrind_control -z`, `-i on`) for exactly {} calls per round (closed loop, \
             every call checked), then off and dumped. Instructions per call = the dump's total `Ir` (all the proxy's threads, \
             user space) ÷ the calls. Rounds run one after the other on the same proxy process and connections.\n",
            t.warmup_calls, t.calls
        );
    }
    let _ = writeln!(out, "## Instructions per call\n");
    let mut head = "| target | token |".to_string();
    let mut rule = "|---|---|".to_string();
    for i in 1..=rounds {
        let _ = write!(head, " round {i} |");
        rule.push_str("---:|");
    }
    head.push_str(" mean | spread | baseline | × baseline |");
    rule.push_str("---:|---:|---|---:|");
    let _ = writeln!(out, "{head}\n{rule}");
    for t in &s.targets {
        let mut row = format!("| {} | {} |", t.target, t.token);
        for i in 0..rounds {
            let _ = write!(
                row,
                " {} |",
                t.rounds.get(i).map_or_else(|| "–".into(), |r| k(*r))
            );
        }
        let _ = write!(
            row,
            " **{}** | {} | {} | {} |",
            k(t.ir_per_call),
            t.spread_pct
                .map_or_else(|| "–".into(), |p| format!("{p:.2}%")),
            t.baseline.as_deref().unwrap_or("–"),
            x(t.vs_baseline)
        );
        let _ = writeln!(out, "{row}");
    }
    let invalid: Vec<_> = s
        .targets
        .iter()
        .filter_map(|t| Some((&t.target, t.invalid.as_ref()?)))
        .collect();
    if !invalid.is_empty() {
        let _ = writeln!(
            out,
            "\n**Invalid** (a call failed, the figures are not used):\n"
        );
        for (t, why) in invalid {
            let _ = writeln!(out, "- {t}: {why}");
        }
    }
    let _ = writeln!(out, "\n## The issue's targets\n");
    let _ = writeln!(
        out,
        "| target | ratio | at most | met |\n|---|---:|---:|---|"
    );
    for c in &s.limits {
        let _ = writeln!(
            out,
            "| {} (`{}` ÷ `{}`) | {} | {:.2}× | {} |",
            c.what,
            c.target,
            c.baseline,
            x(c.ratio),
            c.at_most,
            match c.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    }
    let _ = writeln!(
        out,
        "\n## Where the instructions go\n\n\
         Self instructions of each function in the first valid round, grouped: Rust code by crate (the first path \
         segment of the demangled symbol; drop glue `drop_in_place<T>` by the crate of `T`; `h2::hpack` apart from the \
         rest of `h2`; `std`, `core` and `alloc` together), C code by the object it is in (`libc mem*` = memcpy, memmove, \
         memset, memcmp, bcmp), jemalloc and OpenSSL wherever linked. Code inlined into a function counts for that function.\n"
    );
    for t in &s.targets {
        let _ = writeln!(out, "### {} ({} per call)\n", t.target, k(t.ir_per_call));
        if let Some(e) = &t.profile_error {
            let _ = writeln!(out, "No profile: {e}\n");
            continue;
        }
        let _ = writeln!(
            out,
            "| group | instructions/call | share |\n|---|---:|---:|"
        );
        let mut rest = (0.0, 0.0);
        for (i, g) in t.groups.iter().enumerate() {
            if i < 12 {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.1}% |",
                    g.group,
                    g.ir_per_call,
                    g.share * 100.0
                );
            } else {
                rest.0 += g.ir_per_call;
                rest.1 += g.share;
            }
        }
        if t.groups.len() > 12 {
            let _ = writeln!(
                out,
                "| {} other groups | {:.0} | {:.1}% |",
                t.groups.len() - 12,
                rest.0,
                rest.1 * 100.0
            );
        }
        let _ = writeln!(
            out,
            "\n| top functions (self) | group | instructions/call | share |\n|---|---|---:|---:|"
        );
        for f in &t.top {
            let _ = writeln!(
                out,
                "| `{}` | {} | {:.0} | {:.1}% |",
                shorten(&f.function, 110).replace('|', "\\|"),
                f.group,
                f.ir_per_call,
                f.share * 100.0
            );
        }
        let _ = writeln!(out);
    }
    if !skipped.trim().is_empty() {
        let _ = writeln!(out, "## Skipped\n\n{}\n", skipped.trim());
    }
    let _ = writeln!(
        out,
        "## Judging a change\n\n\
         Run `load-tests/run.sh --callgrind N` (or with `--targets` the ones the change touches) before and after it \
         and compare instructions per call; the spread column shows how far rounds of one target agree. \
         A difference several times the spread is the change's.\n"
    );
    out
}

/// `s` cut to `max` characters with `…`.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::{CountOutcome, Measured, Phase, Round};

    fn result(target: &str, per_call: &[f64], dump: &Path) -> CountResult {
        let phase = Phase {
            calls: 100,
            ok: 100,
            ..Phase::default()
        };
        CountResult {
            target: target.into(),
            token: "file".into(),
            calls: 100,
            warmup_calls: 10,
            outcome: CountOutcome {
                warmup: phase.clone(),
                rounds: per_call
                    .iter()
                    .map(|&c| Round {
                        phase: phase.clone(),
                        measured: Some(Measured {
                            dump: dump.display().to_string(),
                            total_ir: (c * 100.0) as u64,
                            ir_per_call: c,
                        }),
                    })
                    .collect(),
            },
            ..CountResult::default()
        }
    }

    #[test]
    fn ratios_spread_limits_and_groups() {
        let dir = std::env::temp_dir().join(format!("ztgate-cg-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let dump = dir.join("z.out.1");
        std::fs::write(
            &dump,
            "cmd: /t/ztgate run\npositions: line\nevents: Ir\nob=(1) /t/ztgate\nfl=(1) a.rs\n\
             fn=(1) h2::hpack::encoder::Encoder::encode\n1 6000\nfn=(2) tokio::runtime::park\n1 3000\n\
             ob=(2) /lib/libc.so.6\nfn=(3) __memcpy_avx_unaligned_erms\n1 1000\ntotals: 10000\n",
        )
        .unwrap_or_default();
        let s = summarize(&[
            result(HAPROXY_MTLS, &[40_000.0, 40_000.0], &dump),
            result("ztgate-mtls", &[99_000.0, 101_000.0], &dump),
            result(HAPROXY_JWT, &[400_000.0], &dump),
            result("ztgate-full", &[120_000.0], &dump),
        ]);
        let z = &s.targets[1];
        assert_eq!(z.ir_per_call, Some(100_000.0));
        assert_eq!(z.vs_baseline, Some(2.5));
        assert!((z.spread_pct.unwrap_or_default() - 2.0).abs() < 1e-9);
        assert_eq!(s.targets[0].spread_pct, Some(0.0));
        assert_eq!(s.targets[3].vs_baseline, Some(0.3));
        assert_eq!(s.limits[0].met, Some(false));
        assert_eq!(s.limits[1].met, Some(false));
        assert_eq!(s.limits[2].ratio, None, "miss run not measured");
        // 10 000 Ir over 100 calls.
        assert_eq!(z.groups[0].group, "h2::hpack");
        assert_eq!(z.groups[0].ir_per_call, 60.0);
        assert_eq!(z.groups[2].group, "libc mem*");
        assert!((z.groups[2].share - 0.1).abs() < 1e-9);
        assert_eq!(z.top[1].function, "tokio::runtime::park");
        let md = markdown(&s, "- 2 cores", "");
        assert!(md.contains("| ztgate-mtls | file | 99.0k | 101.0k | **100.0k** | 2.00% | haproxy-mtls | 2.50× |"), "{md}");
        assert!(md.contains("| mTLS only ≤ 2.0× HAProxy mTLS (`ztgate-mtls` ÷ `haproxy-mtls`) | 2.50× | 2.00× | **no** |"), "{md}");
        assert!(md.contains("| h2::hpack | 60 | 60.0% |"), "{md}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_call_leaves_the_target_without_figures() {
        let mut r = result("ztgate-full", &[1.0], Path::new("/nonexistent"));
        r.invalid = Some("round 1: 1 of 100 calls failed".into());
        r.outcome.rounds[0].phase.ok = 99;
        let s = summarize(&[r]);
        assert_eq!(s.targets[0].ir_per_call, None);
        assert_eq!(s.targets[0].rounds, vec![None]);
        let md = markdown(&s, "", "");
        assert!(md.contains("**Invalid**"), "{md}");
        assert!(md.contains("1 of 100 calls failed"), "{md}");
    }
}
