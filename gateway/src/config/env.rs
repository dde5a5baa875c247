//! `${VAR}` substitution from the environment, before YAML parsing.
//!
//! Substitution happens on the text so secrets never need to be written in
//! the file; `$$` is a literal `$`. An unset variable is an error that names
//! the variable and its line, never its (absent) value.

/// A variable the config refers to but the environment lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVar {
    pub name: String,
    pub line: usize,
}

/// Replace `${NAME}` with `lookup(NAME)`; report every unset or malformed one.
/// YAML comments are left alone, so a comment may mention `${VAR}`.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<MissingVar>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        expand_line(code, i + 1, &lookup, &mut out, &mut missing);
        out.push_str(comment);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// Byte offset where a line's YAML comment starts (`#` at the start or
/// after whitespace, outside quotes), or the line's length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return i,
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.len()
}

fn expand_line(
    text: &str,
    line: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    missing: &mut Vec<MissingVar>,
) {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            match after.find('}') {
                Some(end) if is_var_name(&after[..end]) => {
                    let name = &after[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push(MissingVar {
                            name: name.to_owned(),
                            line,
                        }),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    missing.push(MissingVar {
                        name: after
                            .chars()
                            .take(32)
                            .take_while(|c| *c != '\n' && *c != '}')
                            .collect(),
                        line,
                    });
                    out.push_str("${");
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "SECRET").then(|| "s3cr3t".to_owned())
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(
            expand("a: ${SECRET}\nb: $$5 $x", env).unwrap(),
            "a: s3cr3t\nb: $5 $x"
        );
    }

    #[test]
    fn comments_are_not_expanded() {
        assert_eq!(
            expand(
                "a: ${SECRET} # use ${NOPE}\n# ${NOPE}\nb: \"x # ${SECRET}\"\n",
                env
            )
            .unwrap(),
            "a: s3cr3t # use ${NOPE}\n# ${NOPE}\nb: \"x # s3cr3t\"\n"
        );
    }

    #[test]
    fn reports_missing_with_line() {
        let err = expand("a: 1\nb: ${NOPE}\nc: ${1BAD}", env).unwrap_err();
        assert_eq!(
            err[0],
            MissingVar {
                name: "NOPE".into(),
                line: 2
            }
        );
        assert_eq!(err[1].line, 3);
    }
}
