//! A reader of callgrind's output format (valgrind's "Callgrind Format
//! Specification"): the total and each function's self cost in `Ir`.
//!
//! Read directly rather than through `callgrind_annotate`, whose text
//! output has no object (shared library) per function, which the report
//! groups C code by. Only what the report needs is kept: per (object,
//! function) the self `Ir`, the cost lines that follow a `calls=` line
//! (a call's inclusive cost) being left out, so the functions add up to the
//! file's `totals:`.

use std::collections::HashMap;

/// Why a dump could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {what}")]
    Bad { line: usize, what: String },
    #[error("no `events:` line with Ir")]
    NoIr,
}

/// One function's self cost (a function is its object, file and name).
#[derive(Clone, Debug, PartialEq)]
pub struct FnCost {
    /// The ELF object (executable or shared library), as callgrind names it.
    pub object: String,
    /// The source file of the function (`???` without debug info).
    pub file: String,
    /// Demangled symbol, or an address without symbols.
    pub name: String,
    pub ir: u64,
}

/// One dump.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// The traced command line (`cmd:`).
    pub cmd: String,
    /// `totals:` (or `summary:`) Ir.
    pub total_ir: u64,
    /// Every function with a non-zero self cost, largest first.
    pub functions: Vec<FnCost>,
}

impl Profile {
    /// The sum of the functions' self costs (equals `total_ir` for a
    /// complete dump).
    pub fn self_sum(&self) -> u64 {
        self.functions.iter().map(|f| f.ir).sum()
    }
}

/// Name spaces of the compressed names: `ob`/`cob`, `fl`/`fi`/`fe`/`cfi`/`cfl`,
/// `fn`/`cfn` share one each.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Object,
    File,
    Function,
}

#[derive(Default)]
struct Names(HashMap<(Space, String), String>);

impl Names {
    /// `(id) name` defines `id`, `(id)` refers to it, anything else is the
    /// name itself.
    fn resolve(&mut self, space: Space, value: &str, line: usize) -> Result<String, FormatError> {
        let v = value.trim();
        let Some(rest) = v.strip_prefix('(') else {
            return Ok(v.to_owned());
        };
        let Some((id, name)) = rest.split_once(')') else {
            return Err(FormatError::Bad {
                line,
                what: format!("unclosed name id in {v:?}"),
            });
        };
        let name = name.trim();
        if name.is_empty() {
            self.0
                .get(&(space, id.to_owned()))
                .cloned()
                .ok_or_else(|| FormatError::Bad {
                    line,
                    what: format!("name id ({id}) used before it was defined"),
                })
        } else {
            self.0.insert((space, id.to_owned()), name.to_owned());
            Ok(name.to_owned())
        }
    }
}

/// Read the dump at `path` (gzip'd when its name ends in `.gz`).
pub fn read(path: &std::path::Path) -> Result<Profile, FormatError> {
    let err = |source| FormatError::Read {
        path: path.display().to_string(),
        source,
    };
    let text = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read as _;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(err)?)
            .read_to_string(&mut text)
            .map_err(err)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(err)?
    };
    parse(&text)
}

/// The `Ir` total of a dump from its `totals:`/`summary:` line alone
/// (cheap: the count command reports it right after each round).
pub fn total_ir(text: &str) -> Result<u64, FormatError> {
    let mut ir_index = None;
    let mut total = None;
    for line in text.lines() {
        if let Some(ev) = line.strip_prefix("events:") {
            ir_index = ev.split_whitespace().position(|e| e == "Ir");
        } else if let Some(v) = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))
        {
            let i = ir_index.ok_or(FormatError::NoIr)?;
            total = Some(v.split_whitespace().nth(i).map_or(Ok(0), |x| {
                x.parse::<u64>().map_err(|e| FormatError::Bad {
                    line: 0,
                    what: format!("total {x:?}: {e}"),
                })
            })?);
        }
    }
    total.ok_or(FormatError::NoIr)
}

/// Parse a dump's text.
pub fn parse(text: &str) -> Result<Profile, FormatError> {
    let mut names = Names::default();
    let mut positions = 1usize;
    let mut ir_index: Option<usize> = None;
    let mut totals: Option<u64> = None;
    let mut summary: Option<u64> = None;
    let mut cmd = String::new();
    let (mut ob, mut fl) = (String::new(), String::new());
    // (object, file, function) -> self Ir. The file is part of a function's
    // identity, as in callgrind: two static functions of one name in one
    // object (OpenSSL's and ring's `__ecp_nistz256_mul_montq`, both from the
    // same CRYPTOGAMS source) are two functions.
    let mut costs: HashMap<(String, String, String), u64> = HashMap::new();
    let mut current: Option<(String, String, String)> = None;
    let mut after_calls = false;

    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let lineno = n + 1;
        let Some(first) = line.chars().next() else {
            continue;
        };
        if first.is_ascii_digit() || matches!(first, '+' | '-' | '*') {
            let skip = std::mem::replace(&mut after_calls, false);
            let idx = ir_index.ok_or(FormatError::NoIr)?;
            if skip {
                continue;
            }
            let ir = match line.split_whitespace().nth(positions + idx) {
                Some(v) => v.parse::<u64>().map_err(|e| FormatError::Bad {
                    line: lineno,
                    what: format!("cost {v:?}: {e}"),
                })?,
                None => 0,
            };
            if ir == 0 {
                continue;
            }
            let key = current.clone().ok_or_else(|| FormatError::Bad {
                line: lineno,
                what: "cost line before any fn=".into(),
            })?;
            *costs.entry(key).or_default() += ir;
            continue;
        }
        let Some((key, value)) = line
            .split_once('=')
            .filter(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase()))
        else {
            // Header lines (`events: Ir`, `cmd: …`, `desc: …`) and comments.
            if let Some(v) = line.strip_prefix("events:") {
                ir_index = v.split_whitespace().position(|e| e == "Ir");
            } else if let Some(v) = line.strip_prefix("positions:") {
                positions = v.split_whitespace().count().max(1);
            } else if let Some(v) = line.strip_prefix("cmd:") {
                cmd = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("totals:") {
                totals = first_ir(v, ir_index, lineno)?;
            } else if let Some(v) = line.strip_prefix("summary:") {
                summary = first_ir(v, ir_index, lineno)?;
            }
            continue;
        };
        match key {
            "ob" => ob = names.resolve(Space::Object, value, lineno)?,
            "fl" => fl = names.resolve(Space::File, value, lineno)?,
            "fi" | "fe" | "cfi" | "cfl" => {
                names.resolve(Space::File, value, lineno)?;
            }
            "cob" => {
                names.resolve(Space::Object, value, lineno)?;
            }
            "fn" => {
                let f = names.resolve(Space::Function, value, lineno)?;
                current = Some((ob.clone(), fl.clone(), f));
            }
            "cfn" => {
                names.resolve(Space::Function, value, lineno)?;
            }
            "calls" => after_calls = true,
            // jump=/jcnd= (with --collect-jumps) carry their own positions
            // and no cost line; anything else is not cost.
            _ => {}
        }
    }
    let total_ir = totals.or(summary).ok_or(FormatError::NoIr)?;
    let mut functions: Vec<FnCost> = costs
        .into_iter()
        .map(|((object, file, name), ir)| FnCost {
            object,
            file,
            name,
            ir,
        })
        .collect();
    functions.sort_by(|a, b| b.ir.cmp(&a.ir).then_with(|| a.name.cmp(&b.name)));
    Ok(Profile {
        cmd,
        total_ir,
        functions,
    })
}

fn first_ir(v: &str, ir_index: Option<usize>, line: usize) -> Result<Option<u64>, FormatError> {
    let i = ir_index.ok_or(FormatError::NoIr)?;
    v.split_whitespace()
        .nth(i)
        .map(|x| {
            x.parse::<u64>().map_err(|e| FormatError::Bad {
                line,
                what: format!("total {x:?}: {e}"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape callgrind 3.19 writes: compressed names defined on first
    /// use (also inside `cfn=`), subposition compression, inlined files
    /// (`fi=`/`fe=`), and a call's inclusive cost after `calls=`.
    const DUMP: &str = "# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 42
cmd:  /x/ztgate run -c f.yaml
part: 1

positions: line
events: Ir
summary: 1000

ob=(1) /x/ztgate
fl=(1) /src/h2/hpack.rs
fn=(1) h2::hpack::encoder::Encoder::encode
10 100
+2 50
cob=(2) /lib/x86_64-linux-gnu/libc.so.6
cfi=(2) ???
cfn=(2) __memcpy_avx_unaligned_erms
calls=3 0
* 300
fi=(3) /rustc/library/core/src/ptr.rs
-1 25
fe=(1)
+1 25

ob=(2)
fl=(2)
fn=(2)
0 300

ob=(1)
fl=(4) /src/pingora.rs
fn=(3) pingora_core::protocols::Stream::read
5 400
fl=(5) /src/ring/p256.S
fn=(4) __ecp_nistz256_mul_montq
1 60
fl=(6) /src/openssl/p256.S
fn=(4)
1 40

totals: 1000
";

    #[test]
    fn self_costs_add_up_to_the_total() {
        let p = parse(DUMP).unwrap_or_default();
        assert_eq!(p.cmd, "/x/ztgate run -c f.yaml");
        assert_eq!(p.total_ir, 1000);
        assert_eq!(p.self_sum(), 1000, "{:?}", p.functions);
        let names: Vec<(&str, &str, u64)> = p
            .functions
            .iter()
            .map(|f| (f.object.as_str(), f.name.as_str(), f.ir))
            .collect();
        assert_eq!(
            names,
            vec![
                ("/x/ztgate", "pingora_core::protocols::Stream::read", 400),
                (
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "__memcpy_avx_unaligned_erms",
                    300
                ),
                ("/x/ztgate", "h2::hpack::encoder::Encoder::encode", 200),
                ("/x/ztgate", "__ecp_nistz256_mul_montq", 60),
                ("/x/ztgate", "__ecp_nistz256_mul_montq", 40),
            ]
        );
        // One name, two files: two functions, each with its own file.
        assert_eq!(p.functions[3].file, "/src/ring/p256.S");
        assert_eq!(p.functions[4].file, "/src/openssl/p256.S");
        assert_eq!(total_ir(DUMP).unwrap_or_default(), 1000);
    }

    #[test]
    fn a_gzipped_dump_reads_the_same() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("ztgate-cg-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("x.out.1.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(DUMP.as_bytes()).unwrap_or_default();
        std::fs::write(&path, gz.finish().unwrap_or_default()).unwrap_or_default();
        assert_eq!(read(&path).ok(), parse(DUMP).ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn more_positions_and_events_pick_the_ir_column() {
        let dump = "positions: instr line\nevents: Bc Ir\nob=o\nfn=f\n0x10 3 7 11\ncalls=1 0x20 4\n0x10 3 0 99\ntotals: 7 11\n";
        let p = parse(dump).unwrap_or_default();
        assert_eq!(p.total_ir, 11);
        assert_eq!(p.self_sum(), 11);
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse("fn=(7)\n"),
            Err(FormatError::Bad { line: 1, .. })
        ));
        assert!(matches!(
            parse("events: Ir\n5 5\n"),
            Err(FormatError::Bad { .. })
        ));
        assert!(matches!(
            parse("events: Ir\nob=o\nfn=f\n1 x\n"),
            Err(FormatError::Bad { line: 4, .. })
        ));
        assert!(matches!(parse("ob=o\n"), Err(FormatError::NoIr)));
        assert!(matches!(total_ir("events: Ir\n"), Err(FormatError::NoIr)));
    }
}
