//! `config`: the config loader, from YAML text to built filters.
//!
//! The gateway's `config::parse` (gateway/src/config/mod.rs) is, in order:
//! `${VAR}` substitution inside scalars (`env::expand`), the key-path line
//! index (`LineIndex::build`), `serde_path_to_error` over the raw types
//! (`raw::Config`), and on error `line_of` for the failing path. This
//! harness runs those same steps on the gateway's own files (see
//! [`crate::gateway`]), then each filter's `build` with the
//! [`BuildContext`] the gateway would pass (upstream names, pipeline). The
//! gateway's own section build (listener, TLS files, upstream pools, state
//! backends) is left out: it opens files and sockets.
//!
//! Input: `VALUE \0 YAML`, or just `YAML` (then a fixed hostile value).
//! Every `${NAME}` is set to `VALUE` + NAME.
//!
//! Checked beyond "no panic" (issue 11, item 8): substitution never
//! changes the document. When `expand` succeeds, the expanded text has the
//! same YAML events (kinds, anchors, tags) as the original with each
//! `${NAME}` in a plain placeholder, and each scalar's value is the
//! original's with its `${NAME}`s replaced and `$$` made `$` (computed here
//! independently); and it has as many lines.
//!
//! File paths in the config (`keys_file`, `ca_file`, GeoIP databases) are
//! cleared before the build: the fuzzer must not read `/dev/zero`.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use ztgate_filter::{BuildContext, ConfigProblem};

use crate::gateway::config::{env, lines::LineIndex, raw};

/// The value used when the input names none: every character that could
/// end a scalar, start a comment, a key, a flow collection, an alias or a
/// block scalar, a `${…}` that must stay literal and a `$$` that must stay
/// double, and a multibyte character (char vs byte offsets).
const HOSTILE: &str = "a: b #c\n- [d, {e: f}]\r\n\"'\\ ${X} $$Y &g *h !i |j >k %l @m `n é\t";

/// `run` caps `device.first_seen.capacity` and `jwt.cache_capacity` at
/// this, for throughput only: the builds refuse anything over 10 million
/// (the finding `config-*-capacity.bin`), but a table that size takes a
/// second to build, so the fuzzer would spend its time there. `run_strict`
/// (what `cargo test` replays the regression inputs with) uses the real
/// values.
const CAPACITY_CAP: usize = 1 << 16;

pub fn run(data: &[u8]) {
    check(data, true);
}

/// Every check with the configured capacities as written.
pub fn run_strict(data: &[u8]) {
    check(data, false);
}

fn check(data: &[u8], cap: bool) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (value, text) = input.split_once('\0').unwrap_or((HOSTILE, input));
    if text.contains('\0') {
        return;
    }
    let lookup = |name: &str| Some(format!("{value}{name}"));
    let expanded = match env::expand(text, lookup) {
        Ok(e) => e,
        Err(problems) => {
            for p in &problems {
                let _ = (p.line(), p.key(), p.to_string());
            }
            return;
        }
    };
    check_structure(text, &expanded, &lookup);
    load_and_build(&expanded, cap);
}

/// What `config::parse` + the filter builds do with the expanded text.
fn load_and_build(text: &str, cap: bool) {
    let lines = LineIndex::build(text);
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: raw::Config = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            let key = e.path().to_string();
            let _ = e.inner().location().map(|l| l.line());
            let _ = lines.line_of(&key);
            let _ = e.inner().to_string();
            return;
        }
    };
    let ctx = BuildContext {
        base_dir: "/nonexistent/ztgate-fuzz".into(),
        upstreams: raw.upstreams.keys().cloned().collect(),
        pipeline: raw.pipeline.clone(),
        ..BuildContext::default()
    };
    let mut problems: Vec<ConfigProblem> = Vec::new();
    let mut note = |r: Result<(), Vec<ConfigProblem>>| {
        if let Err(p) = r {
            problems.extend(p);
        }
    };
    if let Some(s) = &raw.sanitize {
        note(ztgate_sanitize::build(s, &ctx, "sanitize").map(drop));
    }
    if let Some(m) = &raw.mtls {
        note(ztgate_mtls::build(m, &ctx, "mtls").map(drop));
    }
    if let Some(j) = &raw.jwt {
        let mut j = j.clone();
        if cap {
            j.cache_capacity = j.cache_capacity.map(|c| c.min(CAPACITY_CAP));
        }
        for i in &mut j.issuers {
            i.keys_file = None;
            i.ca_file = None;
        }
        note(ztgate_jwt::build(&j, &ctx, "jwt").map(drop));
    }
    if let Some(d) = &raw.device {
        let mut d = d.clone();
        d.geoip = None;
        if let (true, Some(f)) = (cap, d.first_seen.as_mut()) {
            f.capacity = f.capacity.min(CAPACITY_CAP);
        }
        note(ztgate_device::build(&d, &ctx, "device").map(drop));
    }
    note(ztgate_route::build(&raw.routes, &ctx, "routes").map(drop));
    if let Some(r) = &raw.ratelimit {
        note(ztgate_ratelimit::build(r, &ctx, "ratelimit").map(drop));
    }
    // The gateway prints every problem as FILE:LINE.
    for p in &problems {
        let _ = lines.line_of(&p.path);
        let _ = p.to_string();
    }
}

/// One YAML event, as compared: kind, anchor id, tag and scalar value
/// (not the scalar style: a substituted scalar is written back quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Scalar {
        value: String,
        anchor: usize,
        tag: Option<String>,
    },
    SeqStart {
        anchor: usize,
        tag: Option<String>,
    },
    SeqEnd,
    MapStart {
        anchor: usize,
        tag: Option<String>,
    },
    MapEnd,
    Alias(usize),
    Doc,
}

fn events(text: &str) -> Option<Vec<Ev>> {
    struct Recv(Vec<Ev>);
    impl MarkedEventReceiver for Recv {
        fn on_event(&mut self, ev: Event, _mark: Marker) {
            let tag =
                |t: Option<yaml_rust2::parser::Tag>| t.map(|t| format!("{}{}", t.handle, t.suffix));
            self.0.push(match ev {
                Event::Scalar(value, _style, anchor, t) => Ev::Scalar {
                    value,
                    anchor,
                    tag: tag(t),
                },
                Event::SequenceStart(anchor, t) => Ev::SeqStart {
                    anchor,
                    tag: tag(t),
                },
                Event::SequenceEnd => Ev::SeqEnd,
                Event::MappingStart(anchor, t) => Ev::MapStart {
                    anchor,
                    tag: tag(t),
                },
                Event::MappingEnd => Ev::MapEnd,
                Event::Alias(a) => Ev::Alias(a),
                Event::DocumentStart | Event::DocumentEnd => Ev::Doc,
                Event::Nothing | Event::StreamStart | Event::StreamEnd => return,
            });
        }
    }
    let mut recv = Recv(Vec::new());
    Parser::new_from_str(text).load(&mut recv, true).ok()?;
    Some(recv.0)
}

/// Independent of `env.rs`: the original text with every well-formed
/// `${NAME}` as a plain placeholder `<prefix>N_` (N per name), and the names.
fn with_placeholders(text: &str) -> (String, String, Vec<String>) {
    // A run of `q` then `fuzzph`, the run made longer until the prefix is
    // not in the text (as env.rs does with `z`): a match cannot start in
    // text before a placeholder (its `q`s would be one too many before the
    // `f`), so it starts only at one. Letters only, so a placeholder is
    // also a valid anchor or tag name.
    let mut prefix = "qqfuzzph".to_owned();
    while text.contains(&prefix) {
        prefix.insert(0, 'q');
    }
    let mut out = String::new();
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push_str("$$");
            rest = after;
            continue;
        }
        let name = tail
            .strip_prefix("${")
            .and_then(|a| a.split_once('}'))
            .map(|(n, _)| n)
            .filter(|n| {
                let mut b = n.bytes();
                b.next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                    && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            });
        match name {
            Some(n) => {
                // One placeholder per name: `${K}: 1` twice is a duplicate
                // key after substitution, and must be one here too.
                let i = names.iter().position(|m| m == n).unwrap_or_else(|| {
                    names.push(n.to_owned());
                    names.len() - 1
                });
                out.push_str(&format!("{prefix}{i}_"));
                rest = &tail[n.len() + 3..];
            }
            None => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    (out, prefix, names)
}

/// A placeholder scalar's expected value: placeholders → values, `$$` → `$`.
fn expected_value(
    v: &str,
    prefix: &str,
    names: &[String],
    lookup: &impl Fn(&str) -> Option<String>,
) -> String {
    let mut subs: BTreeMap<usize, &str> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        subs.insert(i, n);
    }
    let mut out = String::new();
    let mut rest = v;
    loop {
        let next_ph = rest.find(prefix);
        let next_dd = rest.find("$$");
        match (next_ph, next_dd) {
            (Some(p), d) if d.is_none_or(|d| p < d) => {
                out.push_str(&rest[..p]);
                let after = &rest[p + prefix.len()..];
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                let idx: usize = after[..digits].parse().unwrap();
                out.push_str(&lookup(subs[&idx]).unwrap());
                rest = &after[digits + 1..];
            }
            (_, Some(d)) => {
                out.push_str(&rest[..d]);
                out.push('$');
                rest = &rest[d + 2..];
            }
            _ => break,
        }
    }
    out.push_str(rest);
    out
}

fn check_structure(original: &str, expanded: &str, lookup: &impl Fn(&str) -> Option<String>) {
    if !original.contains('$') {
        assert_eq!(original, expanded, "a text without `$` was changed");
        return;
    }
    let (marked, prefix, names) = with_placeholders(original);
    let Some(want) = events(&marked) else {
        // Not YAML as written: expand must have refused it.
        panic!("expand accepted text whose placeholder form is not YAML");
    };
    // What the gateway deserializes with (serde_yaml, i.e. libyaml) must
    // read the expanded text whenever it reads the original as a mapping
    // (a config file is one). Not for a bare top-level scalar: a plain one
    // swallows a following tab-only line that is an error after a quoted
    // one, and such a file is refused anyway.
    if serde_yaml::from_str::<serde_yaml::Value>(&marked).is_ok_and(|v| v.is_mapping()) {
        if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(expanded) {
            // YAML (and libyaml) limit an implicit key to 1024 characters:
            // `${K}: v` with a longer value is no longer a key.
            // `fuzz/regressions/config-long-value-in-key.bin`.
            // (libyaml words it "could not find expected ':'" or "mapping
            // values are not allowed", depending on what follows.)
            let long_key = expanded.lines().any(|l| l.chars().count() > 1024);
            assert!(
                long_key,
                "expanded text is not YAML to serde_yaml ({e}): {expanded:?}"
            );
        }
    }
    let Some(got) = events(expanded) else {
        // yaml-rust2 (the line index) is stricter than libyaml about a flow
        // collection's indentation after a quoted scalar: `b: [${B} x\n]`
        // reads, `b: ["…"\n]` is "invalid indentation" to it (libyaml reads
        // both). Substitution quotes the scalar, so the line index of such
        // a file is empty and its errors lose their line numbers.
        // `fuzz/regressions/config-quoted-flow-indent.bin`; checked above
        // with serde_yaml instead.
        return;
    };
    assert_eq!(
        got.len(),
        want.len(),
        "substitution changed the number of YAML events\n{original:?}\n→ {expanded:?}"
    );
    // A `${NAME}` inside a tag (`!${T}`) is not a scalar: it is not
    // substituted, and its placeholder stays in the tag. Not compared.
    let untagged = |t: &Option<String>| t.as_ref().is_some_and(|t| t.contains(&prefix));
    let got: Vec<Ev> = got
        .into_iter()
        .zip(&want)
        .map(|(g, w)| match (g, w) {
            (Ev::Scalar { value, anchor, .. }, Ev::Scalar { tag, .. }) if untagged(tag) => {
                Ev::Scalar {
                    value,
                    anchor,
                    tag: None,
                }
            }
            (Ev::SeqStart { anchor, .. }, Ev::SeqStart { tag, .. }) if untagged(tag) => {
                Ev::SeqStart { anchor, tag: None }
            }
            (Ev::MapStart { anchor, .. }, Ev::MapStart { tag, .. }) if untagged(tag) => {
                Ev::MapStart { anchor, tag: None }
            }
            (g, _) => g,
        })
        .collect();
    let want: Vec<Ev> = want
        .into_iter()
        .map(|e| match e {
            Ev::Scalar { value, anchor, tag } => Ev::Scalar {
                value: if value.contains('$') || value.contains(&prefix) {
                    expected_value(&value, &prefix, &names, lookup)
                } else {
                    value
                },
                anchor,
                tag: tag.filter(|t| !t.contains(&prefix)),
            },
            Ev::SeqStart { anchor, tag } => Ev::SeqStart {
                anchor,
                tag: tag.filter(|t| !t.contains(&prefix)),
            },
            Ev::MapStart { anchor, tag } => Ev::MapStart {
                anchor,
                tag: tag.filter(|t| !t.contains(&prefix)),
            },
            e => e,
        })
        .collect();
    assert_eq!(
        got, want,
        "substitution changed the document\n{original:?}\n→ {expanded:?}"
    );
    assert_eq!(
        original.matches('\n').count(),
        expanded.matches('\n').count(),
        "substitution moved lines"
    );
}
