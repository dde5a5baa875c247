//! `${VAR}` substitution from the environment, inside YAML scalars only.
//!
//! Secrets need never be written in the file: `secret: ${DEVICE_SECRET}`.
//! A value from the environment must never change the document's
//! structure, though: substituted into the text before parsing, a secret
//! holding `: `, ` #` or a newline would end the scalar early, add keys or
//! cut the line (issue 11). So the text is parsed first (yaml-rust2, the
//! same parser that maps key paths to lines), and `${NAME}` is replaced only
//! inside the scalars it finds; each scalar that changed is written back
//! into the text in its place as one double-quoted YAML scalar with every
//! special character escaped, which YAML reads back as exactly the
//! substituted string whatever it contains. A plain (unquoted) scalar whose
//! result is a number or `true`/`false` is written back plain, so that
//! `threads: ${THREADS}` still reads as a number.
//!
//! `{` and `}` are flow indicators, so `[${A}, b]` is not YAML as written:
//! before parsing, each well-formed `${NAME}` is swapped for a placeholder
//! made of plain characters, and swapped back inside the scalar it landed in.
//!
//! The rewritten scalar stays on its line, so every line number that
//! `serde_yaml` and the key-path index report is the line in the user's
//! file. That is why a `${VAR}` must sit in a value written on one line:
//! one over several lines (a block scalar `|`, a folded plain or quoted
//! one) is refused with its line rather than substituted.
//!
//! `$$` is a literal `$`; a lone `$` is left as it is. Comments are not
//! scalars, so a comment may mention `${VAR}`. An unset variable is an
//! error that names the variable and its line, never its (absent) value;
//! no error carries a value that was substituted.

use std::fmt::Write as _;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Why the environment could not be substituted into a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// `${NAME}` names a variable the environment lacks (or is not a valid
    /// name: `${1BAD}`, `${A-B}`, an unclosed `${`).
    #[error("environment variable is not set (or not a valid name)")]
    Missing { name: String, line: usize },
    /// `${NAME}` in a value written over several lines.
    #[error(
        "`${{…}}` is only replaced in a value written on one line \
         (quote it, or put it on one line)"
    )]
    MultiLine { name: String, line: usize },
    /// The text is not YAML this substitution can read (the YAML parser's
    /// own message).
    #[error("{message}")]
    Syntax { message: String, line: usize },
}

impl EnvError {
    /// The 1-based line in the file.
    pub fn line(&self) -> usize {
        match self {
            EnvError::Missing { line, .. }
            | EnvError::MultiLine { line, .. }
            | EnvError::Syntax { line, .. } => *line,
        }
    }

    /// What to print where a key path goes: `${NAME}`, or `.` for a
    /// syntax error.
    pub fn key(&self) -> String {
        match self {
            EnvError::Missing { name, .. } | EnvError::MultiLine { name, .. } => {
                format!("${{{name}}}")
            }
            EnvError::Syntax { .. } => ".".to_owned(),
        }
    }
}

/// Replace `${NAME}` with `lookup(NAME)` in every scalar of the YAML `text`
/// (see the module docs); report every unset or malformed reference.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<EnvError>> {
    // Nothing to replace: the text as it is (and no second parse).
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    // Escapes in a double-quoted scalar can spell any string, a
    // placeholder too (`"ztgate\x2denv-0-"`), so a prefix absent from the
    // text may still be present in a scalar's value. A first parse reads
    // what the scalars spell; the prefix used is one none of them holds
    // (nor the text), so every placeholder found in a value is one of ours.
    let probe = Marked::new(text, &[]);
    let spelled = scalars(&probe.text, |v| v.contains('$') || v.contains(PREFIX_TAIL))
        .map_err(|e| vec![e])?;
    let values: Vec<&str> = spelled.iter().map(|s| s.value.as_str()).collect();
    let marked = Marked::new(text, &values);
    let scalars = if marked.prefix == probe.prefix {
        // No value holds the first prefix: no placeholder landed in a
        // scalar and none was spelled.
        spelled
    } else {
        scalars(&marked.text, |v| {
            v.contains('$') || v.contains(&marked.prefix)
        })
        .map_err(|e| vec![e])?
    };
    let text = marked.text.as_str();
    // Char index (what the YAML markers count) → byte offset.
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut problems = Vec::new();
    for s in scalars {
        let line = s.mark.line();
        let value = marked.unmark(&s.value);
        let Some(sub) = substitute(&value, line, &lookup, &mut problems) else {
            continue;
        };
        let Some(start) = offsets.get(s.mark.index()).copied() else {
            problems.push(multi_line(&value, line));
            continue;
        };
        let Some(end) = one_line_end(text, start, &s) else {
            problems.push(multi_line(&value, line));
            continue;
        };
        // Scalars come in document order and never overlap.
        let Some(between) = text.get(copied..start) else {
            problems.push(multi_line(&value, line));
            continue;
        };
        out.push_str(between);
        out.push_str(&encode(&sub, s.style));
        copied = end;
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Ok(out)
}

/// The text with each well-formed `${NAME}` swapped for a placeholder that
/// is a plain scalar in any context (`{` and `}` would open a flow mapping).
struct Marked {
    text: String,
    /// Placeholders are `{prefix}{index}-`; the prefix does not occur in
    /// the original text.
    prefix: String,
    /// The variable names, by index.
    names: Vec<String>,
}

/// Every placeholder prefix ends with this; only a value holding it can
/// hold a prefix.
const PREFIX_TAIL: &str = "tgate-env-";

impl Marked {
    /// Placeholders with a prefix that neither `original` nor any of
    /// `avoid` (what the scalars of the document spell) contains. The
    /// prefix is a run of `z` then [`PREFIX_TAIL`], made longer at the
    /// front: a match of it ends where a `tgate-env-` does, so it can only
    /// start in a placeholder or in text that contains it whole.
    fn new(original: &str, avoid: &[&str]) -> Self {
        let mut prefix = format!("z{PREFIX_TAIL}");
        while original.contains(&prefix) || avoid.iter().any(|v| v.contains(&prefix)) {
            prefix.insert(0, 'z');
        }
        let mut text = String::with_capacity(original.len());
        let mut names = Vec::new();
        let mut rest = original;
        while let Some(i) = rest.find('$') {
            let (head, tail) = rest.split_at(i);
            text.push_str(head);
            // `$$` stays a pair: `$${X}` is a `$` and a literal `{X}`.
            if let Some(after) = tail.strip_prefix("$$") {
                text.push_str("$$");
                rest = after;
                continue;
            }
            match tail.strip_prefix("${").and_then(|a| a.split_once('}')) {
                Some((name, after)) if is_var_name(name) => {
                    let _ = write!(text, "{prefix}{}-", names.len());
                    names.push(name.to_owned());
                    rest = after;
                }
                _ => {
                    text.push('$');
                    rest = tail.get(1..).unwrap_or_default();
                }
            }
        }
        text.push_str(rest);
        Self {
            text,
            prefix,
            names,
        }
    }

    /// A scalar's content with its placeholders turned back into `${NAME}`.
    fn unmark(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(i) = rest.find(&self.prefix) {
            let (head, tail) = rest.split_at(i);
            out.push_str(head);
            let after = tail.get(self.prefix.len()..).unwrap_or_default();
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let name = after
                .get(..digits)
                .and_then(|d| d.parse::<usize>().ok())
                .and_then(|n| self.names.get(n));
            match (name, after.get(digits..).and_then(|r| r.strip_prefix('-'))) {
                (Some(name), Some(next)) => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                    rest = next;
                }
                // Not one of ours after all (cannot happen: the prefix is
                // not in the original text); keep the text.
                _ => {
                    out.push_str(tail.get(..self.prefix.len()).unwrap_or_default());
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// One scalar of the document that contains a `$`.
struct Scalar {
    value: String,
    style: TScalarStyle,
    mark: Marker,
}

/// Every scalar whose value `keep` accepts, in document order.
fn scalars(text: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Scalar>, EnvError> {
    struct Recv<F>(Vec<Scalar>, F);
    impl<F: Fn(&str) -> bool> MarkedEventReceiver for Recv<F> {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if let Event::Scalar(value, style, _, _) = ev {
                if (self.1)(&value) {
                    self.0.push(Scalar { value, style, mark });
                }
            }
        }
    }
    let mut recv = Recv(Vec::new(), keep);
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut recv, true).map_err(|e| EnvError::Syntax {
        message: e.info().to_owned(),
        line: e.marker().line(),
    })?;
    Ok(recv.0)
}

/// `${NAME}` → value and `$$` → `$` in a scalar's content; `None` when
/// nothing changes. Problems are pushed with the scalar's line.
fn substitute(
    value: &str,
    line: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<EnvError>,
) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            changed = true;
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            changed = true;
            match after.split_once('}') {
                Some((name, next)) if is_var_name(name) => {
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => problems.push(EnvError::Missing {
                            name: name.to_owned(),
                            line,
                        }),
                    }
                    rest = next;
                }
                _ => {
                    problems.push(EnvError::Missing {
                        name: after.chars().take(32).take_while(|c| *c != '}').collect(),
                        line,
                    });
                    out.push_str("${");
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = tail.get(1..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

fn is_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The first variable named in a scalar, for a multi-line refusal.
fn multi_line(value: &str, line: usize) -> EnvError {
    let name = value
        .split_once("${")
        .map(|(_, r)| r.chars().take(32).take_while(|c| *c != '}').collect())
        .unwrap_or_else(|| "$".to_owned());
    EnvError::MultiLine { name, line }
}

/// Byte offset just past the scalar starting at `start`, if the scalar is
/// written on that one line in the style the parser reported (checked
/// against the text, so a marker that does not point where we expect
/// refuses rather than rewrites the wrong bytes).
fn one_line_end(text: &str, start: usize, s: &Scalar) -> Option<usize> {
    let rest = text.get(start..)?;
    let line = rest.split('\n').next().unwrap_or_default();
    let len = match s.style {
        // A plain scalar's content is its source text.
        TScalarStyle::Plain => line.starts_with(&s.value).then_some(s.value.len())?,
        TScalarStyle::SingleQuoted => {
            let body = line.strip_prefix('\'')?;
            let mut i = 0;
            loop {
                let q = body.get(i..)?.find('\'')? + i;
                // `''` is an escaped quote inside the scalar.
                if body.get(q + 1..q + 2) == Some("'") {
                    i = q + 2;
                } else {
                    break q + 2;
                }
            }
        }
        TScalarStyle::DoubleQuoted => {
            let body = line.strip_prefix('"')?;
            let mut escaped = false;
            let close = body.char_indices().find_map(|(i, c)| {
                let end = !escaped && c == '"';
                escaped = !escaped && c == '\\';
                end.then_some(i)
            })?;
            close + 2
        }
        TScalarStyle::Literal | TScalarStyle::Folded => return None,
    };
    Some(start + len)
}

/// The scalar to write in place of the original: plain when the original was
/// plain and the result is a number or a boolean (so typed keys still read
/// it as one), else double-quoted with everything that could end the scalar
/// or the line escaped.
fn encode(value: &str, style: TScalarStyle) -> String {
    if style == TScalarStyle::Plain && plain_is_safe(value) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Controls (C0, DEL, C1 with NEL), YAML's other line breaks,
            // a BOM and non-characters: never raw inside a scalar.
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value that reads back as itself as a plain scalar and cannot start any
/// YAML syntax: `true`, `false`, or a sign and a digit followed only by
/// `[A-Za-z0-9_.+-]` (integers, floats, `0x…`).
fn plain_is_safe(v: &str) -> bool {
    if v == "true" || v == "false" {
        return true;
    }
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    digits.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(k: &str) -> Option<String> {
        match k {
            "SECRET" => Some("s3cr3t".to_owned()),
            "PORT" => Some("8443".to_owned()),
            "EVIL" => Some("x: y #z\nc: d\n  - e \"q\" 'r' \\ ${SECRET} \u{2028}".to_owned()),
            _ => None,
        }
    }

    /// The document after substitution, as YAML reads it.
    fn parsed(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(&expand(text, env).unwrap()).unwrap()
    }

    #[test]
    fn substitutes_and_escapes() {
        let v =
            parsed("a: ${SECRET}\nb: $$5 $x\nc: \"pre-${SECRET}-post\"\nd: 'it''s ${SECRET}'\n");
        assert_eq!(v["a"], "s3cr3t");
        assert_eq!(v["b"], "$5 $x");
        assert_eq!(v["c"], "pre-s3cr3t-post");
        assert_eq!(v["d"], "it's s3cr3t");
    }

    /// Issue 11: a value holding `: `, ` #`, a newline, quotes and
    /// backslashes ends up verbatim in its key, and the document keeps
    /// exactly its keys, in block and in flow context.
    #[test]
    fn a_value_cannot_change_the_structure() {
        let evil = env("EVIL").unwrap();
        let text = "a: ${EVIL}\nb: 1\nlist: [${EVIL}, two]\nmap: { k: \"${EVIL}\", j: ${EVIL}x }\n";
        let v: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&expand(text, env).unwrap()).unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), vec!["a", "b", "list", "map"]);
        assert_eq!(v["a"], serde_yaml::Value::String(evil.clone()));
        assert_eq!(v["b"], 1);
        assert_eq!(v["list"][0], serde_yaml::Value::String(evil.clone()));
        assert_eq!(v["list"][1], "two");
        assert_eq!(v["map"]["k"], serde_yaml::Value::String(evil.clone()));
        assert_eq!(v["map"]["j"], serde_yaml::Value::String(evil + "x"));
        // A substituted value is not substituted again.
        assert!(v["a"].as_str().unwrap().contains("${SECRET}"));
    }

    /// Fuzzing (issue 11, `fuzz/regressions/config-escaped-placeholder.bin`):
    /// escapes that spell a placeholder are text, not a variable, even for
    /// a variable used elsewhere or only named in a comment.
    #[test]
    fn a_spelled_placeholder_is_not_a_variable() {
        for text in [
            "a: ${SECRET}\nb: \"ztgate\\x2denv-0-\"\n",
            "# ${SECRET}\nb: \"z\\x7atgate-env-0-\"\n",
            "a: ${SECRET}\nb: \"zztgate-env-0\\x2d\"\nc: zztgate-env-0-\n",
        ] {
            let v = parsed(text);
            let b = v["b"].as_str().unwrap();
            assert!(
                b.contains("tgate-env-0-") && !b.contains("s3cr3t"),
                "{text:?}: {b}"
            );
            if !text.starts_with('#') {
                assert_eq!(v["a"], "s3cr3t", "{text:?}");
            }
        }
    }

    #[test]
    fn lines_stay_where_they_were() {
        let text = "a: ${EVIL}\nb: 2\n# ${EVIL}\nc: 3\n";
        let out = expand(text, env).unwrap();
        assert_eq!(out.lines().count(), text.lines().count());
        assert_eq!(out.lines().nth(1), Some("b: 2"));
        assert_eq!(out.lines().nth(3), Some("c: 3"));
    }

    #[test]
    fn numbers_and_booleans_stay_typed() {
        let v = parsed("port: ${PORT}\nquoted: \"${PORT}\"\n");
        assert_eq!(v["port"], 8443);
        assert_eq!(v["quoted"], "8443");
        for ok in ["1", "-1", "+2", "1.5", "1e9", "0x1f", "true", "false"] {
            assert!(plain_is_safe(ok), "{ok}");
        }
        for no in [
            "", "-", "- a", "a1", ".5", "1: x", "1 #", "1,2", "[1]", "*a", "&a", "~",
        ] {
            assert!(!plain_is_safe(no), "{no}");
        }
    }

    #[test]
    fn comments_are_not_expanded() {
        let v = parsed("a: ${SECRET} # use ${NOPE}\n# ${NOPE}\nb: \"x # ${SECRET}\"\n");
        assert_eq!(v["a"], "s3cr3t");
        assert_eq!(v["b"], "x # s3cr3t");
    }

    #[test]
    fn dollar_escapes_and_placeholders_do_not_mix() {
        let v = parsed("a: $${SECRET}\nb: \"ztgate-env-0-\"\nc: ${SECRET}\n");
        assert_eq!(v["a"], "${SECRET}");
        assert_eq!(v["b"], "ztgate-env-0-");
        assert_eq!(v["c"], "s3cr3t");
    }

    #[test]
    fn text_without_a_dollar_is_untouched() {
        let text = "a: 1 # note\nb:   [x,  y]\n";
        assert_eq!(expand(text, env).unwrap(), text);
    }

    #[test]
    fn reports_missing_with_line() {
        let err = expand("a: 1\nb: ${NOPE}\nc: ${1BAD}\nd: [\"${ALSO_NOPE}\"]\n", env).unwrap_err();
        assert_eq!(
            err[0],
            EnvError::Missing {
                name: "NOPE".into(),
                line: 2
            }
        );
        assert_eq!(err[0].key(), "${NOPE}");
        assert_eq!(err[1].line(), 3);
        assert_eq!(
            err[2],
            EnvError::Missing {
                name: "ALSO_NOPE".into(),
                line: 4
            }
        );
    }

    #[test]
    fn multi_line_values_are_refused_with_their_line() {
        let err = expand("a: 1\nb: |\n  x ${SECRET}\n  y\n", env).unwrap_err();
        assert_eq!(
            err,
            vec![EnvError::MultiLine {
                name: "SECRET".into(),
                line: 3
            }]
        );
        let err = expand("a: \"x\n  ${SECRET}\"\n", env).unwrap_err();
        assert!(matches!(err[0], EnvError::MultiLine { .. }), "{err:?}");
        // Not a secret in any message.
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }

    #[test]
    fn anchors_tags_and_keys() {
        let v = parsed("a: &x ${SECRET}\nb: *x\nc: !!str ${PORT}\n${SECRET}: k\n");
        assert_eq!(v["a"], "s3cr3t");
        assert_eq!(v["b"], "s3cr3t");
        assert_eq!(v["c"], "8443");
        assert_eq!(v["s3cr3t"], "k");
    }

    #[test]
    fn bad_yaml_is_a_syntax_error_with_its_line() {
        let err = expand("a: ${SECRET}\nb: [1, 2\n", env).unwrap_err();
        assert!(matches!(err[0], EnvError::Syntax { .. }), "{err:?}");
        assert!(err[0].line() >= 2, "{err:?}");
    }
}
