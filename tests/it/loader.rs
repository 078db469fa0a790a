//! `validate` next to Triton's own loader: every broken fixture, every example repository and
//! generated variants of the rules, each loaded by NVIDIA's tritonserver 2.51 as a process
//! (`TD_TRITONSERVER`, from `scripts/tritonserver-process.sh`; one server run per repository,
//! `--exit-on-error=false`), Triton's verdict read from its repository index and its log. Every
//! model Triton refuses, `validate` must refuse; every model Triton loads, `validate` must accept,
//! except where it is stricter on purpose (listed below, and in docs/validate.md). Models whose
//! backend this CPU build lacks are checked by Triton's core only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Rules `validate` applies although Triton 2.51 loads the model: each names something that
/// fails later (no request can satisfy it, or the server serves nothing), said in the rule's
/// message and in docs/validate.md.
const STRICTER_ON_PURPOSE: &[(&str, &str)] = &[(
    "TD029",
    "two tensors with the same name load, but no request can give both",
)];

/// Rules about the files a backend reads (its model file, the ONNX graph): past Triton's core,
/// so not judged where this build lacks the backend.
const BACKEND_RULES: &[&str] = &["TD011", "TD039", "TD040", "TD041", "TD042"];

/// Triton's verdict on one model.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Loaded,
    /// Refused, with Triton's message.
    Refused(String),
    /// Triton's core accepted it; this build has no backend to load it with.
    CoreOnly,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Loads `repo` in a tritonserver process and returns its verdict per model directory.
fn triton(repo: &Path, work: &Path) -> BTreeMap<String, Verdict> {
    let bin = PathBuf::from(env("TD_TRITONSERVER"));
    let backends = bin.parent().unwrap().parent().unwrap().join("backends");
    let port = free_port();
    let log_path = work.join(format!(
        "triton-{}.log",
        repo.file_name().unwrap().to_string_lossy()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(&bin)
        .arg(format!("--model-repository={}", repo.display()))
        .arg(format!("--backend-directory={}", backends.display()))
        .args([
            "--exit-on-error=false",
            "--exit-timeout-secs=1",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--strict-readiness=false",
        ])
        .arg(format!("--http-port={port}"))
        // The python backend's stub finds its Python home through PATH: the system's.
        .env("PATH", "/usr/bin:/bin")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let index: Option<Vec<Value>> = loop {
        if let Some(status) = child.try_wait().unwrap() {
            // The server refused the repository as a whole.
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            eprintln!(
                "tritonserver exited ({status}) on {}:\n{text}",
                repo.display()
            );
            break None;
        }
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", &format!("{base}/v2/repository/index")])
            .output()
            .unwrap();
        if out.status.success() {
            break Some(serde_json::from_slice(&out.stdout).unwrap());
        }
        if start.elapsed() > Duration::from_secs(30) {
            // Loading never finished: a model hung the server (2.51 waits forever on a python
            // stub that failed to start). Each model it was loading is refused, in effect.
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return hung(&text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    verdicts(index.as_deref().unwrap_or_default(), &text)
}

/// The models a server that never finished loading was loading, refused with its last word.
fn hung(log: &str) -> BTreeMap<String, Verdict> {
    let last = log
        .lines()
        .rfind(|l| l.contains("Failed") || l.contains("failed") || l.starts_with('E'))
        .unwrap_or("no error logged")
        .trim()
        .to_string();
    log.lines()
        .filter_map(message)
        .filter_map(|m| m.strip_prefix("loading: ").map(str::to_string))
        .map(|m| {
            let name = m
                .rsplit_once(':')
                .map_or(m.as_str(), |(n, _)| n)
                .to_string();
            (
                name,
                Verdict::Refused(format!("loading never finished (30 s): {last}")),
            )
        })
        .collect()
}

/// The message of a Triton log line (between the quotes after `] `).
fn message(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("] ")?;
    let rest = rest.trim();
    Some(
        serde_json::from_str::<String>(rest).unwrap_or_else(|_| rest.trim_matches('"').to_string()),
    )
}

fn verdicts(index: &[Value], log: &str) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    // `unable to find backend library for backend 'onnxruntime'` (this build lacks it), also
    // when an ensemble's member lacks it; not `unable to find backend library '<runtime>'`,
    // which is a refusal of the model's own `runtime`.
    let lacks_backend = |r: &str| r.contains("unable to find backend library for backend '");
    for e in index {
        let name = e["name"].as_str().unwrap().to_string();
        let v = match e["state"].as_str() {
            Some("READY") => Verdict::Loaded,
            Some(_) => {
                let r = e["reason"].as_str().unwrap_or_default().to_string();
                if lacks_backend(&r) {
                    Verdict::CoreOnly
                } else {
                    Verdict::Refused(r)
                }
            }
            // Listed by name alone: its configuration was refused while polling (the log says
            // why), or it was never tried.
            None => Verdict::Refused(String::new()),
        };
        out.insert(name, v);
    }
    for line in log.lines() {
        let Some(m) = message(line) else { continue };
        if let Some(rest) = m.strip_prefix("Poll failed for model directory '") {
            let (name, reason) = rest.split_once("': ").unwrap_or((rest, ""));
            out.insert(name.to_string(), Verdict::Refused(reason.to_string()));
        }
        // An ensemble refused while resolving its members names itself in the message.
        for (name, v) in out.iter_mut() {
            let names_it = m.contains(&format!("ensemble {name} "))
                || m.contains(&format!("in ensemble {name},"));
            if names_it && *v == Verdict::Refused(String::new()) {
                *v = Verdict::Refused(m.clone());
            }
        }
    }
    // Listed without a state, never tried, beside a model this build cannot load: it depends
    // on that one (an ensemble), so only the core's checks apply to it.
    let any_core_only = out.values().any(|v| *v == Verdict::CoreOnly);
    for v in out.values_mut() {
        if any_core_only && *v == Verdict::Refused(String::new()) {
            *v = Verdict::CoreOnly;
        }
    }
    out
}

/// `validate`'s errors per model (`""` for repository-level ones): the rule codes; and the
/// models it read.
fn validate(repo: &Path) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json", "validate"])
        .arg(repo)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "validate {}: {}{}",
            repo.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in doc["diagnostics"].as_array().unwrap() {
        if d["severity"] == "error" {
            let model = d["model"].as_str().unwrap_or_default().to_string();
            errors
                .entry(model)
                .or_default()
                .push(d["rule"].as_str().unwrap().to_string());
        }
    }
    let models = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    (errors, models)
}

/// A copy of `repo` to load (the python stub writes `__pycache__` next to model files).
fn copy(repo: &Path, work: &Path) -> PathBuf {
    let to = work.join("repos").join(repo.file_name().unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(repo)
        .arg(&to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying {}", repo.display());
    to
}

/// A python-backend model directory with `config`; the model answers OUT = IN (warm-up
/// requests run it).
fn python_model(root: &Path, name: &str, config: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("config.pbtxt"), config).unwrap();
    std::fs::write(
        dir.join("1/model.py"),
        "import triton_python_backend_utils as pb_utils\n\n\nclass TritonPythonModel:\n    def execute(self, requests):\n        out = []\n        for r in requests:\n            t = pb_utils.get_input_tensor_by_name(r, \"IN\")\n            out.append(pb_utils.InferenceResponse([pb_utils.Tensor(\"OUT\", t.as_numpy())]))\n        return out\n",
    )
    .unwrap();
}

/// Generated variants: a second (and third) example for rules whose fixture is one case, each
/// a small change to a valid python model. Triton is the referee of each.
fn variants(root: &Path) -> Vec<PathBuf> {
    let io = |extra: &str| {
        format!(
            "backend: \"python\"\nmax_batch_size: 8\ninput [ {{ name: \"IN\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\noutput [ {{ name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n{extra}"
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("valid", io("")),
        ("valid-dynamic-batching", io("dynamic_batching { preferred_batch_size: [ 2, 8 ] max_queue_delay_microseconds: 100 }\n")),
        ("valid-instances", io("instance_group [ { kind: KIND_CPU count: 2 } ]\n")),
        ("valid-no-batching", "backend: \"python\"\nmax_batch_size: 0\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ -1 ] } ]\n".into()),
        ("max-batch-negative", io("").replace("max_batch_size: 8", "max_batch_size: -1")),
        ("preferred-zero", io("dynamic_batching { preferred_batch_size: [ 0 ] }\n")),
        ("preferred-negative", io("dynamic_batching { preferred_batch_size: [ -4 ] }\n")),
        ("dims-minus-two", io("").replace("dims: [ 4 ] } ]\noutput", "dims: [ -2 ] } ]\noutput")),
        ("dims-zero", io("").replace("dims: [ 4 ] } ]\noutput", "dims: [ 0 ] } ]\noutput")),
        ("input-no-type", io("").replace("name: \"IN\" data_type: TYPE_FP32", "name: \"IN\"")),
        ("output-no-dims", io("").replace("name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ]", "name: \"OUT\" data_type: TYPE_FP32")),
        ("reshape-mismatch", io("").replace("dims: [ 4 ] } ]\noutput", "dims: [ 4 ] reshape: { shape: [ 3 ] } } ]\noutput")),
        ("instance-count-negative", io("instance_group [ { kind: KIND_CPU count: -1 } ]\n")),
        ("instance-gpu-ids-on-cpu", io("instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]\n")),
        ("priority-levels-default-too-high", io("dynamic_batching { priority_levels: 2 default_priority_level: 3 }\n")),
        ("sequence-without-batching", "backend: \"python\"\nmax_batch_size: 0\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] } ]\nsequence_batching { control_input [ { name: \"START\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] } ] }\n".into()),
        ("valid-two-controls-one-tensor", io("sequence_batching { control_input [ { name: \"START\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }, { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] } ] }\n")),
        ("control-tensor-twice", io("sequence_batching { control_input [ { name: \"C\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] }, { name: \"C\" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] } ] }\n")),
        ("control-kind-twice", io("sequence_batching { control_input [ { name: \"A\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] }, { name: \"B\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] } ] }\n")),
        ("valid-warmup", io("model_warmup [ { name: \"w\" batch_size: 1 inputs { key: \"IN\" value { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n")),
        ("warmup-no-inputs", io("model_warmup [ { name: \"w\" batch_size: 1 } ]\n")),
        ("warmup-wrong-input", io("model_warmup [ { name: \"w\" batch_size: 1 inputs { key: \"NOPE\" value { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n")),
        ("unknown-field", io("no_such_field: 3\n")),
        ("wrong-name", format!("name: \"other\"\n{}", io(""))),
    ];
    let mut repos = Vec::new();
    for (name, config) in cases {
        let repo = root.join(format!("variant-{name}"));
        python_model(&repo, "m", &config);
        repos.push(repo);
    }
    repos
}

#[test]
#[ignore = "needs tritonserver as a process (scripts/stack.sh up): run ./scripts/test.sh"]
fn validate_refuses_what_triton_refuses_and_accepts_what_it_loads() {
    let work = tempfile::tempdir().unwrap();
    let mut repos: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    repos.sort();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("model-repos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    examples.sort();
    repos.extend(examples);
    repos.extend(variants(work.path()));

    let mut table = Vec::new();
    let mut wrong = Vec::new();
    let (mut checked, mut agreed, mut core_only, mut stricter) = (0, 0, 0, 0);
    for repo in &repos {
        let label = repo.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = copy(repo, work.path());
        let mut triton = triton(&loaded, work.path());
        let (ours, models) = validate(&loaded);
        // A model validate reads that Triton does not list is one it never serves.
        for m in models.iter().chain(ours.keys().filter(|k| !k.is_empty())) {
            triton
                .entry(m.clone())
                .or_insert_with(|| Verdict::Refused("not in Triton's repository index".into()));
        }
        for (model, verdict) in &triton {
            let rules = ours.get(model).cloned().unwrap_or_default();
            let repo_rules = ours.get("").cloned().unwrap_or_default();
            let refused_by_us = !rules.is_empty() || !repo_rules.is_empty();
            checked += 1;
            let outcome = match verdict {
                Verdict::Refused(why) if refused_by_us => {
                    agreed += 1;
                    format!("both refuse ({}): {why}", rules.join(","))
                }
                Verdict::Refused(why) => {
                    wrong.push(format!(
                        "{label}/{model}: Triton refuses ({why}), validate accepts"
                    ));
                    "DISAGREE: validate accepts".into()
                }
                Verdict::Loaded if !refused_by_us => {
                    agreed += 1;
                    "both accept".into()
                }
                Verdict::Loaded => {
                    let unlisted: Vec<&String> = rules
                        .iter()
                        .chain(&repo_rules)
                        .filter(|r| !STRICTER_ON_PURPOSE.iter().any(|(s, _)| s == r))
                        .collect();
                    if unlisted.is_empty() {
                        stricter += 1;
                        format!("stricter on purpose ({})", rules.join(","))
                    } else {
                        wrong.push(format!(
                            "{label}/{model}: Triton loads it, validate refuses ({unlisted:?})"
                        ));
                        "DISAGREE: validate refuses".into()
                    }
                }
                Verdict::CoreOnly => {
                    core_only += 1;
                    let core: Vec<&String> = rules
                        .iter()
                        .filter(|r| !BACKEND_RULES.contains(&r.as_str()))
                        .filter(|r| !STRICTER_ON_PURPOSE.iter().any(|(s, _)| s == *r))
                        .collect();
                    if core.is_empty() {
                        format!(
                            "core accepts; backend not in this build ({})",
                            rules.join(",")
                        )
                    } else {
                        wrong.push(format!(
                            "{label}/{model}: Triton's core accepts it, validate refuses ({core:?})"
                        ));
                        "DISAGREE: validate refuses what the core accepts".into()
                    }
                }
            };
            table.push(format!("{label:<40} {model:<16} {outcome}"));
        }
    }
    eprintln!(
        "validate next to Triton 2.51's loader:\n{}",
        table.join("\n")
    );
    eprintln!(
        "{checked} models in {} repositories: {agreed} agree, {stricter} stricter on purpose, {core_only} checked by Triton's core only, {} disagree",
        repos.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "disagreements:\n{}", wrong.join("\n"));
    assert!(checked >= 60, "only {checked} models were judged");
}
