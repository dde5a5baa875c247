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
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<MissingVar>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(i) = rest.find('$') {
        let (head, tail) = rest.split_at(i);
        line += head.matches('\n').count();
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
                        name: after.chars().take(32).take_while(|c| *c != '\n').collect(),
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
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
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
    fn reports_missing_with_line() {
        let err = expand("a: 1\nb: ${NOPE}\nc: ${1BAD}", env).unwrap_err();
        assert_eq!(err[0], MissingVar { name: "NOPE".into(), line: 2 });
        assert_eq!(err[1].line, 3);
    }
}
