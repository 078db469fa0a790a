//! Ensemble rules (TD036–TD037): step structure and tensor wiring, then the cross-model checks
//! Triton makes when it builds the dependency graph (`ensemble_utils.cc`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::rules::*;
use super::{Cx, Resolved, fs};
use crate::triton::model_config::ModelConfig;
use crate::triton::model_config::inference::model_config::SchedulingChoice;
use crate::triton::model_repo::ModelRepo;

use super::model::{dtype_name, fmt_dims};

type EnsembleStep = crate::triton::model_config::inference::model_ensembling::Step;

fn steps(cfg: &ModelConfig) -> &[crate::triton::model_config::inference::model_ensembling::Step] {
    match &cfg.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(e)) => &e.step,
        _ => &[],
    }
}

pub fn check(
    cx: &mut Cx,
    cfg: &ModelConfig,
    repo: &ModelRepo,
    resolved: &HashMap<&str, Option<Resolved>>,
) {
    let m = cx.model.name.clone();
    structure(cx, cfg, &m);
    cross_model(cx, cfg, repo, resolved, &m);
}

fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn structure(cx: &mut Cx, cfg: &ModelConfig, m: &str) {
    if !cfg.instance_group.is_empty() {
        cx.error(
            ENSEMBLE_STRUCTURE,
            "instance_group",
            format!("instance group should not be specified for ensemble '{m}'"),
        );
    }
    if cfg.optimization.is_some() {
        cx.error(
            ENSEMBLE_STRUCTURE,
            "optimization",
            format!("optimization should not be specified for ensemble '{m}'"),
        );
    }
    if !cfg.model_warmup.is_empty() {
        cx.error(
            ENSEMBLE_STRUCTURE,
            "model_warmup",
            format!("model_warmup can not be specified for ensemble '{m}'"),
        );
    }
    if !matches!(
        cfg.scheduling_choice,
        Some(SchedulingChoice::EnsembleScheduling(_))
    ) {
        return; // TD022 already says so
    }
    let steps = steps(cfg);
    if steps.is_empty() {
        cx.error(
            ENSEMBLE_STRUCTURE,
            "ensemble_scheduling",
            format!("must specify 'step' for ensemble '{m}'"),
        );
        return;
    }
    let inputs: BTreeSet<&str> = cfg.input.iter().map(|i| i.name.as_str()).collect();
    let outputs: BTreeSet<&str> = cfg.output.iter().map(|o| o.name.as_str()).collect();
    let mut written: BTreeMap<&str, usize> = BTreeMap::new();
    let mut consumed: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let sp = format!("ensemble_scheduling.step[{i}]");
        for (field, empty) in [
            ("model_name", s.model_name.is_empty()),
            ("input_map", s.input_map.is_empty()),
            ("output_map", s.output_map.is_empty()),
        ] {
            if empty {
                cx.error(
                    ENSEMBLE_STRUCTURE,
                    &sp,
                    format!("must specify '{field}' in step {i} of ensemble '{m}'"),
                );
            }
        }
        for (_, t) in sorted(&s.input_map) {
            consumed.entry(t.as_str()).or_insert(i);
        }
        for (k, t) in sorted(&s.output_map) {
            if written.insert(t.as_str(), i).is_some() {
                cx.error(ENSEMBLE_STRUCTURE, &format!("{sp}.output_map[{k:?}]"), format!("ensemble tensor '{t}' can appear in an output map only once for ensemble '{m}' step {i}"));
            }
        }
    }
    for t in &inputs {
        if !consumed.contains_key(t) {
            let idx = cfg.input.iter().position(|x| x.name == *t).unwrap_or(0);
            cx.error(
                ENSEMBLE_STRUCTURE,
                &format!("input[{idx}]"),
                format!("ensemble input '{t}' for ensemble {m}' is not used"),
            );
        }
    }
    for t in &outputs {
        if !written.contains_key(t) {
            let idx = cfg.output.iter().position(|x| x.name == *t).unwrap_or(0);
            cx.error(
                ENSEMBLE_STRUCTURE,
                &format!("output[{idx}]"),
                format!("output '{t}' for ensemble '{m}' is not written"),
            );
        }
    }
    for (t, i) in &consumed {
        if !inputs.contains(t) && !written.contains_key(t) {
            let key = steps[*i]
                .input_map
                .iter()
                .find(|(_, v)| v.as_str() == *t)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            let out = outputs.iter().next().copied().unwrap_or("");
            cx.error(ENSEMBLE_STRUCTURE, &format!("ensemble_scheduling.step[{i}].input_map[{key:?}]"), format!("output '{out}' for ensemble '{m}' is not written: at least one of its depending tensors, '{t}', is not connected"))
                .help(format!("'{t}' is neither an ensemble input nor written by any step's output_map"));
        }
    }
    for (t, i) in &written {
        if !outputs.contains(t) && !consumed.contains_key(t) {
            let key = steps[*i]
                .output_map
                .iter()
                .find(|(_, v)| v.as_str() == *t)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            cx.error(
                ENSEMBLE_STRUCTURE,
                &format!("ensemble_scheduling.step[{i}].output_map[{key:?}]"),
                format!("ensemble tensor '{t}' is unused in ensemble '{m}'"),
            );
        }
    }
}

/// The shape of a tensor as one model declares it, for comparison across models.
#[derive(Clone)]
struct Shape {
    model: String,
    data_type: i32,
    dims: Vec<i64>,
    batching: bool,
}

fn shape_matches(a: &Shape, b: &Shape) -> bool {
    let eq = |x: &[i64], y: &[i64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| *p == -1 || *q == -1 || p == q)
    };
    let full = |s: &Shape| {
        let mut v = Vec::with_capacity(s.dims.len() + 1);
        if s.batching {
            v.push(-1);
        }
        v.extend(&s.dims);
        v
    };
    eq(&a.dims, &b.dims) || eq(&full(a), &full(b)) || eq(&full(a), &b.dims) || eq(&a.dims, &full(b))
}

/// Where an ensemble tensor is used, with the shape each use gives it.
type Uses = BTreeMap<String, Vec<(Shape, String)>>;

/// A tensor's dims as the model sees them (after its reshape).
fn reshaped(
    dims: &[i64],
    reshape: Option<&crate::triton::model_config::inference::ModelTensorReshape>,
) -> Vec<i64> {
    reshape
        .map(|r| r.shape.clone())
        .unwrap_or_else(|| dims.to_vec())
}

/// The steps' models the repository does not have (or has ambiguously), reported.
fn missing_members<'a>(
    cx: &mut Cx,
    steps: &'a [EnsembleStep],
    repo: &ModelRepo,
    m: &str,
) -> BTreeSet<&'a str> {
    // Models that are not in the repository.
    let missing: BTreeSet<&str> = steps
        .iter()
        .map(|s| s.model_name.as_str())
        .filter(|n| !n.is_empty() && (repo.model(n).is_none() || fs::is_system_dir(n)))
        .collect();
    if !missing.is_empty() {
        let list = missing.iter().copied().collect::<Vec<_>>().join(", ");
        let i = steps
            .iter()
            .position(|s| missing.contains(s.model_name.as_str()))
            .unwrap_or(0);
        cx.error(
            ENSEMBLE_MODELS,
            &format!("ensemble_scheduling.step[{i}].model_name"),
            format!("ensemble {m} contains models that are not available or ambiguous: {list}"),
        );
    }
    missing
}

/// The ensemble's own inputs and outputs, as the first use of each tensor.
fn own_shapes(cfg: &ModelConfig, m: &str) -> Uses {
    let own_batching = cfg.max_batch_size > 0;
    let mut shapes: BTreeMap<String, Vec<(Shape, String)>> = BTreeMap::new();
    for (i, t) in cfg.input.iter().enumerate() {
        shapes.entry(t.name.clone()).or_default().push((
            Shape {
                model: m.to_string(),
                data_type: t.data_type,
                dims: reshaped(&t.dims, t.reshape.as_ref()),
                batching: own_batching,
            },
            format!("input[{i}]"),
        ));
    }
    for (i, t) in cfg.output.iter().enumerate() {
        shapes.entry(t.name.clone()).or_default().push((
            Shape {
                model: m.to_string(),
                data_type: t.data_type,
                dims: reshaped(&t.dims, t.reshape.as_ref()),
                batching: own_batching,
            },
            format!("output[{i}]"),
        ));
    }

    shapes
}

/// One step's member: loadable, in the version asked, batching within it, and every map
/// naming tensors the member has; the uses of ensemble tensors recorded.
fn member_step(
    cx: &mut Cx,
    cfg: &ModelConfig,
    repo: &ModelRepo,
    m: &str,
    (i, s): (usize, &EnsembleStep),
    shapes: &mut Uses,
) {
    let sp = format!("ensemble_scheduling.step[{i}]");
    let Some(member) = repo.model(&s.model_name) else {
        return;
    };
    let name = &s.model_name;
    let Some(parsed) = member.parsed() else {
        let why = match &member.config {
            Some(Err(e)) => e.message.clone(),
            _ => format!(
                "failed to open text file for read {}: No such file or directory",
                member.config_file.display()
            ),
        };
        cx.error(ENSEMBLE_MODELS, &format!("{sp}.model_name"), format!("ensemble '{m}' depends on '{name}' which is not valid. Model '{name}' failed with error: {why}"));
        return;
    };
    let mc = &parsed.config;
    let versions = fs::selected_versions(member, mc);
    if versions.is_empty() {
        cx.error(
            ENSEMBLE_MODELS,
            &format!("{sp}.model_name"),
            format!("ensemble '{m}' depends on '{name}' which has no loaded version."),
        );
    } else if s.model_version != -1 && !versions.contains(&s.model_version) {
        cx.error(
            ENSEMBLE_MODELS,
            &format!("{sp}.model_version"),
            format!(
                "ensemble '{m}' depends on '{name}' whose required version {} is not loaded.",
                s.model_version
            ),
        )
        .help(if s.model_version == 0 {
            "model_version is 0 when omitted; set model_version: -1 to use the latest version"
                .to_string()
        } else {
            format!("'{name}' serves versions {versions:?} under its version policy")
        });
    }
    if mc.max_batch_size != 0 && cfg.max_batch_size > mc.max_batch_size {
        cx.error(ENSEMBLE_MODELS, "max_batch_size", format!("ensemble {m} allows maximum batch size {}, but it contains model {name} which only allows maximum batch size to be {}", cfg.max_batch_size, mc.max_batch_size));
    }
    let member_batching = mc.max_batch_size > 0;
    // The member's tensors: name, datatype, dims as the member sees them.
    let inputs: Vec<(&str, i32, Vec<i64>)> = mc
        .input
        .iter()
        .map(|x| {
            (
                x.name.as_str(),
                x.data_type,
                reshaped(&x.dims, x.reshape.as_ref()),
            )
        })
        .collect();
    let outputs: Vec<(&str, i32, Vec<i64>)> = mc
        .output
        .iter()
        .map(|x| {
            (
                x.name.as_str(),
                x.data_type,
                reshaped(&x.dims, x.reshape.as_ref()),
            )
        })
        .collect();
    let maps = [
        (
            "input_map",
            &s.input_map,
            &inputs,
            "is mapping to non-existing input",
        ),
        (
            "output_map",
            &s.output_map,
            &outputs,
            "is mapped from non-existing output",
        ),
    ];
    for (field, map, have, wording) in maps {
        for (k, t) in sorted(map) {
            let kp = format!("{sp}.{field}[{k:?}]");
            match have.iter().find(|x| x.0 == k.as_str()) {
                None => {
                    cx.error(
                        ENSEMBLE_MODELS,
                        &kp,
                        format!(
                            "in ensemble {m}, ensemble tensor {t} {wording} {k} in model {name}"
                        ),
                    );
                }
                Some((_, data_type, dims)) => shapes.entry(t.clone()).or_default().push((
                    Shape {
                        model: name.clone(),
                        data_type: *data_type,
                        dims: dims.clone(),
                        batching: member_batching,
                    },
                    kp,
                )),
            }
        }
        if field == "input_map" {
            for x in &mc.input {
                if !x.optional && !s.input_map.contains_key(&x.name) {
                    cx.error(ENSEMBLE_MODELS, &format!("{sp}.input_map"), format!("in ensemble {m}, input {} in model {name} is not mapped to any ensemble tensors", x.name));
                }
            }
        }
    }
}

/// Every use of an ensemble tensor agrees with its first in datatype and shape.
fn consistent_shapes(cx: &mut Cx, m: &str, shapes: &Uses) {
    for (t, uses) in shapes {
        let Some((first, _)) = uses.first() else {
            continue;
        };
        for (other, path) in &uses[1..] {
            if other.data_type != first.data_type {
                cx.error(ENSEMBLE_MODELS, path, format!("in ensemble {m}, ensemble tensor {t}: inconsistent data type: {} is inferred from model {} while {} is inferred from model {}", dtype_name(first.data_type), first.model, dtype_name(other.data_type), other.model));
            } else if !shape_matches(first, other) {
                cx.error(ENSEMBLE_MODELS, path, format!("in ensemble {m}, ensemble tensor {t}: inconsistent shape: {} is inferred from model {} while {} is inferred from model {}", fmt_dims(&first.dims), first.model, fmt_dims(&other.dims), other.model));
            }
        }
    }
}

fn cross_model(
    cx: &mut Cx,
    cfg: &ModelConfig,
    repo: &ModelRepo,
    _resolved: &HashMap<&str, Option<Resolved>>,
    m: &str,
) {
    let steps = steps(cfg);
    if steps.is_empty() {
        return;
    }
    let missing = missing_members(cx, steps, repo, m);
    if let Some(cycle) = find_cycle(m, repo) {
        cx.error(
            ENSEMBLE_MODELS,
            "ensemble_scheduling",
            format!(
                "circular dependency between ensembles: {}",
                cycle.join(" -> ")
            ),
        );
    }

    let mut shapes = own_shapes(cfg, m);
    for (i, s) in steps.iter().enumerate() {
        if !missing.contains(s.model_name.as_str()) {
            member_step(cx, cfg, repo, m, (i, s), &mut shapes);
        }
    }
    decoupled_origins(cx, steps, repo, m);
    consistent_shapes(cx, m, &shapes);
}

/// A step may not take inputs that originate from two different decoupled models: their responses
/// cannot be matched up. Origins flow through non-decoupled steps.
fn decoupled_origins(
    cx: &mut Cx,
    steps: &[crate::triton::model_config::inference::model_ensembling::Step],
    repo: &ModelRepo,
    m: &str,
) {
    let decoupled = |name: &str| {
        repo.model(name)
            .and_then(|x| x.parsed())
            .and_then(|p| p.config.model_transaction_policy.as_ref())
            .is_some_and(|t| t.decoupled)
    };
    let mut origin: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    // Steps may be listed in any order: propagate until nothing changes (at most one pass per step).
    for _ in 0..=steps.len() {
        let mut changed = false;
        for s in steps {
            let mut from: BTreeSet<&str> = BTreeSet::new();
            if decoupled(&s.model_name) {
                from.insert(s.model_name.as_str());
            } else {
                for t in s.input_map.values() {
                    from.extend(origin.get(t.as_str()).into_iter().flatten());
                }
            }
            for t in s.output_map.values() {
                let e = origin.entry(t.as_str()).or_default();
                let before = e.len();
                e.extend(&from);
                changed |= e.len() != before;
            }
        }
        if !changed {
            break;
        }
    }
    for (i, s) in steps.iter().enumerate() {
        let from: BTreeSet<&str> = s
            .input_map
            .values()
            .flat_map(|t| origin.get(t.as_str()).into_iter().flatten().copied())
            .collect();
        if from.len() > 1 {
            let list = from.iter().copied().collect::<Vec<_>>().join(", ");
            cx.error(ENSEMBLE_MODELS, &format!("ensemble_scheduling.step[{i}].input_map"), format!("in ensemble {m}, step of model '{}' receives inputs originated from different decoupled models", s.model_name))
                .help(format!("its inputs come from the decoupled models {list}"));
        }
    }
}

/// A cycle of ensembles through `start`, as the list of names ending where it began.
fn find_cycle(start: &str, repo: &ModelRepo) -> Option<Vec<String>> {
    fn deps(repo: &ModelRepo, name: &str) -> Vec<String> {
        repo.model(name)
            .and_then(|m| m.parsed())
            .map(|p| {
                steps(&p.config)
                    .iter()
                    .map(|s| s.model_name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn dfs(
        repo: &ModelRepo,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for d in deps(repo, node) {
            if d == start {
                path.push(d);
                return true;
            }
            if seen.insert(d.clone()) {
                path.push(d.clone());
                if dfs(repo, &d, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    dfs(repo, start, start, &mut path, &mut seen).then_some(path)
}
