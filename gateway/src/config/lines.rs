//! Where each key path lives in the YAML text, so problems found after
//! parsing (a missing file, a route to an unknown upstream) can be printed as
//! `FILE:LINE: key.path: message`, like parse errors are.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key path (`routes[0].select[1].upstream`) → 1-based line.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

enum Frame {
    /// In a mapping; `Some(key)` when the next node is that key's value.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Recv {
    stack: Vec<Frame>,
    index: LineIndex,
}

impl Recv {
    /// Path of the node that starts now (and advance the parent's state).
    fn enter(&mut self, line: usize) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => {
                let k = key.take()?;
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
        };
        self.index.lines.entry(path.clone()).or_insert(line);
        Some(path)
    }

    /// A scalar in key position: remember it as the pending key.
    fn key(&mut self, k: &str, line: usize) -> bool {
        if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
            if key.is_none() {
                let full = if path.is_empty() {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                };
                self.index.lines.insert(full, line);
                *key = Some(k.to_owned());
                return true;
            }
        }
        false
    }
}

impl MarkedEventReceiver for Recv {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(s, ..) if !self.key(&s, line) => {
                self.enter(line);
            }
            Event::Alias(_) => {
                self.enter(line);
            }
            Event::MappingStart(..) => {
                let path = self.enter(line).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(line).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Scalar(..) | Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

impl LineIndex {
    /// Index a YAML document; a document that does not scan gives an empty
    /// index (the parse error carries its own line).
    pub fn build(text: &str) -> Self {
        let mut recv = Recv {
            stack: Vec::new(),
            index: LineIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recv, false).is_err() {
            return LineIndex::default();
        }
        recv.index
    }

    /// The line of `path`, or of its nearest ancestor that is in the file.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let text = "a: 1\nroutes:\n  - name: x\n    select:\n      - upstream: u1\n      - upstream: u2\nb:\n  c: [1, 2]\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("a"), Some(1));
        assert_eq!(idx.line_of("routes[0].name"), Some(3));
        assert_eq!(idx.line_of("routes[0].select[1].upstream"), Some(6));
        assert_eq!(idx.line_of("b.c"), Some(8));
        // Missing leaf: falls back to the nearest ancestor.
        assert_eq!(idx.line_of("routes[0].select[1].missing"), Some(6));
        assert_eq!(idx.line_of("nope"), None);
    }
}
