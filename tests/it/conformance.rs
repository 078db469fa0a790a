//! Differential conformance of the `config.pbtxt` parser against NVIDIA's published `ModelConfig` schema
//! (from `tritonclient`) read by Google's protobuf text-format parser.
//!
//! Needs the oracle's Python environment; `./scripts/test.sh` creates it and sets `TD_ORACLE_PYTHON`.
//! The tests are `#[ignore]`d for plain `cargo test` and run by the test script with `--run-ignored all`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost_reflect::{Kind, MessageDescriptor};
use triton_deploy::triton::model_config;

fn oracle_python() -> String {
    std::env::var("TD_ORACLE_PYTHON").expect(
        "TD_ORACLE_PYTHON is not set: run ./scripts/test.sh, which installs the oracle (tritonclient + protobuf)",
    )
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Int32 => "int32".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Uint32 => "uint32".into(),
        other => format!("{other:?}"),
    }
}

fn dump(desc: &MessageDescriptor, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
    if !seen.insert(desc.full_name().to_string()) {
        return;
    }
    let mut fields: Vec<_> = desc.fields().collect();
    fields.sort_by_key(|f| f.number());
    let parts: Vec<String> = fields
        .iter()
        .map(|f| {
            let rep = if f.is_list() || f.is_map() { "[]" } else { "" };
            let oneof = f
                .containing_oneof()
                .map(|o| format!("/{}", o.name()))
                .unwrap_or_default();
            format!(
                "{}={}:{}{rep}{oneof}",
                f.name(),
                f.number(),
                kind_name(&f.kind())
            )
        })
        .collect();
    out.push(format!("{} {}", desc.full_name(), parts.join(" ")));
    for f in desc.fields() {
        match f.kind() {
            Kind::Message(m) => dump(&m, seen, out),
            Kind::Enum(e) if seen.insert(e.full_name().to_string()) => {
                let values: Vec<String> = e
                    .values()
                    .map(|v| format!("{}={}", v.name(), v.number()))
                    .collect();
                out.push(format!("{} {}", e.full_name(), values.join(" ")));
            }
            _ => {}
        }
    }
}

#[test]
#[ignore = "needs the oracle environment: run ./scripts/test.sh"]
fn schema_matches_the_published_schema() {
    let py = oracle_python();
    let out = Command::new(py)
        .arg(root().join("tests/conformance/oracle.py"))
        .arg("--schema")
        .output()
        .expect("running the oracle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut ours = Vec::new();
    dump(&model_config::descriptor(), &mut BTreeSet::new(), &mut ours);
    ours.sort();
    let diff: Vec<String> = ours
        .iter()
        .filter(|l| !theirs.contains(l))
        .map(|l| format!("ours:   {l}"))
        .chain(
            theirs
                .iter()
                .filter(|l| !ours.contains(l))
                .map(|l| format!("theirs: {l}")),
        )
        .collect();
    assert!(diff.is_empty(), "schemas differ:\n{}", diff.join("\n"));
    assert!(ours.len() > 50, "the schema dump covers every message");
}

/// Files under `dir` whose name ends with `suffix`, recursively, sorted.
fn files_under(dir: &Path, pred: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, pred, out);
        } else if pred(&p) {
            out.push(p);
        }
    }
}

/// A small deterministic generator (xorshift64*), so that every run tests the same mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Splits text into rough tokens (strings, words, single symbols), keeping the whitespace before
/// each token with it, so that joining them gives back the text.
fn rough_tokens(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i] as char).is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            toks.push(src[start..].to_string());
            break;
        }
        let c = b[i];
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
            while i < b.len() && !src.is_char_boundary(i) {
                i += 1;
            }
        }
        toks.push(src[start..i].to_string());
    }
    toks
}

const REPLACEMENTS: &[&str] = &[
    ":",
    "{",
    "}",
    "[",
    "]",
    ",",
    ";",
    "<",
    ">",
    "-1",
    "0",
    "7",
    "010",
    "0x1F",
    "1.5",
    "2.5f",
    "1e3",
    "true",
    "True",
    "t",
    "false",
    "2",
    "\"s\"",
    "'s'",
    "\"a\" \"b\"",
    "TYPE_FP32",
    "TYPE_NOPE",
    "99",
    "KIND_GPU",
    "name",
    "nonexistent_field",
    "dims",
    "${max_batch_size}",
    "//",
    "inf",
    "nan",
    "4294967296",
    "2147483648",
    "-2147483649",
    "\"\\x41\\101\\n\"",
    "\"\u{e9}\"",
    "\u{201c}x\u{201d}",
    "/* c */",
    "\"unterminated",
    "09",
    "1.2.3",
    "0x",
    "3abc",
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "7",
    "-1",
    "-0",
    "010",
    "0x1F",
    "0X10",
    "1e3",
    "2.5f",
    ".5",
    "5.",
    "1E-2",
    "2147483647",
    "-2147483648",
    "4294967295",
    "18446744073709551615",
    "9223372036854775808",
    "true",
    "False",
    "t",
    "f",
    "\"s\"",
    "'single'",
    "\"a\" 'b'",
    "\"\\t\\x41\\101\\u00e9\"",
    "TYPE_FP32",
    "TYPE_BF16",
    "KIND_CPU",
    "FORMAT_NHWC",
    "13",
    "-5",
    "inf",
    "-inf",
    "nan",
    "infinity",
    "\"\"",
];

const SNIPPETS: &[&str] = &[
    "max_batch_size: 8",
    "max_batch_size: 0",
    "dynamic_batching { }",
    "sequence_batching { direct { } }",
    "ensemble_scheduling { step [ { model_name: \"m\" } ] }",
    "version_policy { all {} }",
    "version_policy { latest { num_versions: 2 } all { } }",
    "parameters { key: \"k\" value { string_value: \"v\" } }",
    "parameters { key: \"k\" value { string_value: \"w\" } }",
    "instance_group [ { kind: KIND_CPU count: 2 } ]",
    "input [ { name: \"x\" data_type: TYPE_FP32 dims: [ -1 ] } ]",
    "output { name: \"y\", data_type: TYPE_INT64, dims: [ 1, 2 ], }",
    "model_warmup [{ name: \"w\" batch_size: 1 inputs { key: \"x\" value { data_type: TYPE_FP32 dims: [1] zero_data: true } } }]",
    "model_warmup { inputs { key: \"x\" value { zero_data: true random_data: true } } }",
    "name: \"dup\"",
    "response_cache { enable: true }",
    "optimization { cuda { graphs: 1 } }",
    "backend: \"python\";",
    "dims: [ 1, ]",
    "input [ ]",
    "metric_tags: [ ]",
    "model_metrics { metric_control [ { histogram_options { buckets: [ 1, 2.5, -inf ] } } ] }",
];

fn mutate(src: &str, rng: &mut Rng) -> String {
    let mut toks = rough_tokens(src);
    let n = toks.len().max(1);
    let pick = rng.below(n);
    match rng.below(8) {
        0 => {
            if pick < toks.len() {
                toks.remove(pick);
            }
        }
        1 => {
            if pick < toks.len() {
                let t = toks[pick].clone();
                toks.insert(pick, t);
            }
        }
        2 => {
            if pick + 1 < toks.len() {
                let (a, b) = (
                    toks[pick].trim_start().to_string(),
                    toks[pick + 1].trim_start().to_string(),
                );
                toks[pick] = format!(" {b}");
                toks[pick + 1] = format!(" {a}");
            }
        }
        3 => {
            let r = REPLACEMENTS[rng.below(REPLACEMENTS.len())];
            if pick < toks.len() {
                toks[pick] = format!(" {r}");
            }
        }
        4 | 5 => {
            // Replace a value (a token after ':') with another literal, often of another type.
            let values: Vec<usize> = (1..toks.len())
                .filter(|&i| {
                    toks[i - 1].trim() == ":" && !matches!(toks[i].trim(), "{" | "[" | "<")
                })
                .collect();
            if !values.is_empty() {
                let at = values[rng.below(values.len())];
                toks[at] = format!(" {}", VALUES[rng.below(VALUES.len())]);
            }
        }
        6 => {
            // Append a whole top-level field.
            let s = SNIPPETS[rng.below(SNIPPETS.len())];
            toks.push(format!("\n{s}\n"));
        }
        _ => {
            // Insert a whole field after a closing brace or at the start of a line.
            let s = SNIPPETS[rng.below(SNIPPETS.len())];
            let spots: Vec<usize> = toks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.starts_with('\n') || t.trim() == "}" || t.trim() == "]")
                .map(|(i, _)| i + 1)
                .collect();
            let at = if spots.is_empty() {
                0
            } else {
                spots[rng.below(spots.len())]
            };
            toks.insert(at.min(toks.len()), format!("\n{s}\n"));
        }
    }
    toks.concat()
}

#[derive(serde::Deserialize)]
struct OracleLine {
    file: String,
    ok: bool,
    #[serde(default)]
    json: serde_json::Value,
    #[serde(default)]
    error: String,
}

/// The oracle's error for an enum given as a leading-zero (octal) number.
fn is_octal_enum_number(error: &str) -> bool {
    error.split("has no value named ").nth(1).is_some_and(|v| {
        let v = v.trim_end_matches('.');
        v.len() > 1 && v.starts_with('0') && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
    })
}

/// Our (C++-faithful) rejection of `-0` in an unsigned field.
fn is_negative_zero_unsigned(e: &triton_deploy::triton::pbtxt::ParseError, text: &str) -> bool {
    let rest = text[e.span.end.min(text.len())..].trim_start();
    e.message == "Expected integer, got: -"
        && rest.trim_start_matches("0x").starts_with('0')
        && rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric())
            .all(|b| b == b'0' || b == b'x')
}

#[test]
#[ignore = "needs the oracle environment: run ./scripts/test.sh"]
fn parser_agrees_with_protobuf_on_every_config_and_mutation() {
    let py = oracle_python();
    let mut seeds = Vec::new();
    files_under(
        &root().join("model-repos"),
        &|p| p.extension().is_some_and(|e| e == "pbtxt"),
        &mut seeds,
    );
    files_under(
        &root().join("tests/fixtures"),
        &|p| p.extension().is_some_and(|e| e == "pbtxt"),
        &mut seeds,
    );
    assert!(
        seeds.len() >= 40,
        "expected the example repositories and fixtures, found {}",
        seeds.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(PathBuf, String)> = Vec::new();
    for s in &seeds {
        let text = std::fs::read_to_string(s).unwrap();
        cases.push((s.clone(), text));
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let seed_texts: Vec<String> = cases.iter().map(|(_, t)| t.clone()).collect();
    let mutations = 3000;
    for i in 0..mutations {
        let base = &seed_texts[i % seed_texts.len()];
        let mut text = mutate(base, &mut rng);
        if rng.below(3) == 0 {
            text = mutate(&text, &mut rng);
        }
        let path = dir.path().join(format!("mutation_{i:04}.pbtxt"));
        std::fs::write(&path, &text).unwrap();
        cases.push((path, text));
    }

    let out = Command::new(py)
        .arg(root().join("tests/conformance/oracle.py"))
        .args(cases.iter().map(|(p, _)| p.as_os_str()))
        .output()
        .expect("running the oracle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<OracleLine> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("oracle JSON line"))
        .collect();
    assert_eq!(lines.len(), cases.len());

    let mut disagreements = Vec::new();
    let (mut accepted, mut rejected, mut known_divergences) = (0, 0, 0);
    for ((path, text), theirs) in cases.iter().zip(&lines) {
        assert_eq!(Path::new(&theirs.file), path.as_path());
        let ours = model_config::parse(text);
        match (&ours, theirs.ok) {
            (Ok(p), true) => {
                accepted += 1;
                let j = model_config::to_canonical_json(&p.source);
                if j != theirs.json {
                    disagreements.push(format!(
                        "{}: values differ\n  ours:   {j}\n  theirs: {}\n--- text ---\n{text}",
                        path.display(),
                        theirs.json
                    ));
                }
            }
            (Err(_), false) => rejected += 1,
            // Python's parser reads enum numbers with int(x, 0), which refuses C-style octal
            // ("010"); protobuf's C++ parser, the one Triton runs, reads it as 8. We follow C++.
            (Ok(_), false) if is_octal_enum_number(&theirs.error) => known_divergences += 1,
            (Ok(_), false) => disagreements.push(format!(
                "{}: we accept, protobuf rejects: {}\n--- text ---\n{text}",
                path.display(),
                theirs.error
            )),
            // Python accepts "-0" in an unsigned field; C++ wants an unsigned integer token
            // and rejects the sign. We follow C++.
            (Err(e), true) if is_negative_zero_unsigned(e, text) => known_divergences += 1,
            (Err(e), true) => disagreements.push(format!(
                "{}: we reject ({e}), protobuf accepts\n--- text ---\n{text}",
                path.display()
            )),
        }
    }
    eprintln!(
        "conformance: {} configs ({} seeds, {mutations} mutations): {accepted} accepted, {rejected} rejected, \
         {known_divergences} known Python-vs-C++ parser differences (we follow C++), {} disagreements",
        cases.len(),
        seeds.len(),
        disagreements.len()
    );
    assert!(
        rejected > 100 && accepted > 100,
        "the mutations exercise both outcomes"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n\n{}",
        disagreements.len(),
        disagreements.join("\n\n")
    );
}
