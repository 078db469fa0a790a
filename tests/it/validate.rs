//! `triton-deploy validate` end to end: the example repositories pass, every broken fixture fails
//! with exactly its rule, and the output formats and exit codes hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_json(args: &[&str], paths: &[PathBuf]) -> (i32, Value) {
    let out = cargo_bin_cmd!("triton-deploy")
        .arg("validate")
        .args(["--format", "json"])
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}):\n{stdout}"));
    (out.status.code().unwrap(), doc)
}

fn dirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_repository_is_valid_without_warnings() {
    let repos = dirs(&root().join("model-repos"));
    assert!(repos.len() >= 5, "at least five example repositories");
    for repo in repos {
        let (code, doc) = run_json(&["--strict"], std::slice::from_ref(&repo));
        assert_eq!(code, 0, "{}: {doc:#}", repo.display());
        assert_eq!(doc["valid"], true);
        assert_eq!(doc["diagnostics"].as_array().unwrap().len(), 0, "{doc:#}");
        assert!(!doc["models"].as_array().unwrap().is_empty());
    }
}

#[test]
fn model_summaries_report_backend_platform_and_served_versions() {
    let (code, doc) = run_json(&[], &[root().join("model-repos/multi-version")]);
    assert_eq!(code, 0);
    assert_eq!(
        doc["models"],
        serde_json::json!([{"name": "scale", "backend": "onnxruntime", "platform": "onnxruntime_onnx", "versions": [2, 3]}])
    );
    let (_, doc) = run_json(&[], &[root().join("model-repos/ensemble")]);
    let names: Vec<(&str, &str)> = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["backend"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("classifier", "onnxruntime"),
            ("pipeline", ""),
            ("preprocess", "python")
        ]
    );
    assert_eq!(doc["models"][1]["platform"], "ensemble");
}

/// Each fixture under tests/fixtures/broken is named after the one rule it breaks.
#[test]
fn every_broken_fixture_fails_with_exactly_its_rule() {
    let fixtures = dirs(&root().join("tests/fixtures/broken"));
    let mut covered = BTreeSet::new();
    for f in &fixtures {
        let name = f.file_name().unwrap().to_str().unwrap();
        let rule = &name[..5];
        let paths = if rule == "TD012" {
            vec![f.join("a"), f.join("b")]
        } else {
            vec![f.clone()]
        };
        let (code, doc) = run_json(&["--strict"], &paths);
        assert_eq!(code, 1, "{name} must be invalid under --strict: {doc:#}");
        assert_eq!(doc["valid"], false);
        let diags = doc["diagnostics"].as_array().unwrap();
        let rules: BTreeSet<&str> = diags.iter().map(|d| d["rule"].as_str().unwrap()).collect();
        assert_eq!(rules, BTreeSet::from([rule]), "{name}: {doc:#}");
        for d in diags {
            assert!(
                d["file"].is_string(),
                "{name}: every diagnostic names a file: {d}"
            );
            assert!(!d["message"].as_str().unwrap().is_empty());
            if d["file"].as_str().unwrap().ends_with(".pbtxt")
                && d["severity"] == "error"
                && !["TD004", "TD020"].contains(&rule)
            {
                assert!(
                    d["line"].as_u64().unwrap() >= 1 && d["column"].as_u64().unwrap() >= 1,
                    "{name}: {d}"
                );
            }
        }
        // Errors fail without --strict too; warning-only fixtures pass.
        let errors = diags.iter().any(|d| d["severity"] == "error");
        let (code, _) = run_json(&[], &paths);
        assert_eq!(code, if errors { 1 } else { 0 }, "{name}");
        covered.insert(rule.to_string());
    }
    let all: BTreeSet<String> = (1..=42).map(|i| format!("TD{i:03}")).collect();
    assert_eq!(covered, all, "one fixture per rule");
}

#[test]
fn text_output_points_at_file_line_and_column_with_a_snippet() {
    let f = root().join("tests/fixtures/broken/TD015-unknown-enum");
    let out = cargo_bin_cmd!("triton-deploy")
        .args(["validate", "--no-color"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let file = f.join("m/config.pbtxt");
    assert!(
        text.contains(&format!("error[TD015]: {}:2:33: Error parsing text-format inference.ModelConfig: 2:33: Unknown enumeration value of \"TYPE_FLOAT32\" for field \"data_type\".", file.display())),
        "{text}"
    );
    assert!(
        text.contains("input [ { name: \"IN\" data_type: TYPE_FLOAT32"),
        "snippet: {text}"
    );
    assert!(
        text.contains("invalid: 1 error, 0 warnings in 1 model"),
        "{text}"
    );
}

#[test]
fn a_single_model_directory_is_validated_in_its_repository_context() {
    // The ensemble's members are siblings: read for the cross-model checks, not reported.
    let (code, doc) = run_json(&[], &[root().join("model-repos/ensemble/pipeline")]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["models"].as_array().unwrap().len(), 1);
    assert_eq!(doc["models"][0]["name"], "pipeline");
    let (code, doc) = run_json(
        &[],
        &[root().join("tests/fixtures/broken/TD019-name-mismatch/m")],
    );
    assert_eq!(code, 1);
    assert_eq!(doc["diagnostics"][0]["rule"], "TD019");
}

#[test]
fn usage_errors_exit_64_with_the_json_error_document() {
    let (code, doc) = run_json(&[], &[root().join("no/such/repository")]);
    assert_eq!(code, 64);
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid directory")
    );
    assert!(
        doc["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("no/such/repository")
    );
    let out = cargo_bin_cmd!("triton-deploy")
        .args(["validate", "--bogus-flag", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = cargo_bin_cmd!("triton-deploy")
        .args(["validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // clap's own errors under --format json: one JSON error document on stdout.
    let out = cargo_bin_cmd!("triton-deploy")
        .args(["--format", "json", "validate", "--bogus-flag", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--bogus-flag"),
        "{doc}"
    );
}

#[test]
fn strict_turns_warnings_into_failures() {
    let f = root().join("tests/fixtures/broken/TD018-duplicate-key");
    let (code, doc) = run_json(&[], std::slice::from_ref(&f));
    assert_eq!((code, &doc["valid"]), (0, &Value::Bool(true)));
    assert_eq!(doc["diagnostics"][0]["severity"], "warning");
    let (code, doc) = run_json(&["--strict"], &[f]);
    assert_eq!((code, &doc["valid"]), (1, &Value::Bool(false)));
}

#[test]
fn disabling_auto_complete_makes_a_missing_config_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("add_sub/1");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(
        root().join("model-repos/simple-onnx/add_sub/1/model.onnx"),
        m.join("model.onnx"),
    )
    .unwrap();
    let (code, doc) = run_json(&[], &[dir.path().to_path_buf()]);
    assert_eq!(code, 0);
    assert_eq!(doc["diagnostics"][0]["rule"], "TD004");
    assert_eq!(doc["diagnostics"][0]["severity"], "warning");
    assert_eq!(
        doc["models"][0]["backend"], "onnxruntime",
        "autofilled from model.onnx"
    );
    let (code, doc) = run_json(
        &["--disable-auto-complete-config"],
        &[dir.path().to_path_buf()],
    );
    assert_eq!(code, 1);
    assert_eq!(doc["diagnostics"][0]["severity"], "error");
}

#[test]
fn the_rule_catalogue_lists_every_rule() {
    let out = cargo_bin_cmd!("triton-deploy")
        .args(["validate", "--list-rules", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 42);
    assert_eq!(v[11]["id"], "TD012");
    assert_eq!(v[11]["name"], "duplicate-model");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const PY: &str = "class TritonPythonModel:\n    pass\n";
const IO: &str = "input [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n";

#[test]
fn ensemble_cross_model_checks_cover_decoupled_origins_and_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for m in ["a", "b"] {
        write(d, &format!("{m}/1/model.py"), PY);
        write(
            d,
            &format!("{m}/config.pbtxt"),
            &format!("backend: \"python\"\n{IO}model_transaction_policy {{ decoupled: true }}\n"),
        );
    }
    write(d, "c/1/model.py", PY);
    write(
        d,
        "c/config.pbtxt",
        "backend: \"python\"\ninput [ { name: \"X\" data_type: TYPE_FP32 dims: [ 4 ] }, { name: \"Y\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n",
    );
    write(d, "e/1/.keep", "");
    // Steps listed out of order on purpose: c consumes what a and b produce.
    write(
        d,
        "e/config.pbtxt",
        &format!(
            "platform: \"ensemble\"\n{IO}ensemble_scheduling {{ step [\n\
        {{ model_name: \"c\" model_version: -1 input_map {{ key: \"X\" value: \"a_out\" }} input_map {{ key: \"Y\" value: \"b_out\" }} output_map {{ key: \"OUT\" value: \"OUT\" }} }},\n\
        {{ model_name: \"a\" model_version: -1 input_map {{ key: \"IN\" value: \"IN\" }} output_map {{ key: \"OUT\" value: \"a_out\" }} }},\n\
        {{ model_name: \"b\" model_version: -1 input_map {{ key: \"IN\" value: \"IN\" }} output_map {{ key: \"OUT\" value: \"b_out\" }} }}\n] }}\n"
        ),
    );
    let (code, doc) = run_json(&[], &[d.to_path_buf()]);
    assert_eq!(code, 1, "{doc:#}");
    let msgs: Vec<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            "in ensemble e, step of model 'c' receives inputs originated from different decoupled models"
        ]
    );
    assert_eq!(doc["diagnostics"][0]["line"], 5);

    // Two ensembles that include each other.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "m/1/model.py", PY);
    write(d, "m/config.pbtxt", &format!("backend: \"python\"\n{IO}"));
    for (e, other) in [("e1", "e2"), ("e2", "e1")] {
        write(d, &format!("{e}/1/.keep"), "");
        write(
            d,
            &format!("{e}/config.pbtxt"),
            &format!(
                "platform: \"ensemble\"\n{IO}ensemble_scheduling {{ step [ {{ model_name: \"{other}\" model_version: -1 input_map {{ key: \"IN\" value: \"IN\" }} output_map {{ key: \"OUT\" value: \"OUT\" }} }} ] }}\n"
            ),
        );
    }
    let (code, doc) = run_json(&[], &[d.to_path_buf()]);
    assert_eq!(code, 1);
    let msgs: BTreeSet<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        BTreeSet::from([
            "circular dependency between ensembles: e1 -> e2 -> e1",
            "circular dependency between ensembles: e2 -> e1 -> e2"
        ])
    );
}
