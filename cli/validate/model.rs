//! Rules on one model's configuration (TD019–TD035, TD038): identity and backend, tensors,
//! scheduling, instance groups, warmup, sequence state, parameters and metrics.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use super::rules::*;
use super::{Cx, PLATFORMS, Resolved};
use crate::triton::model_config::ModelConfig;
use crate::triton::model_config::inference::{
    DataType, ModelDynamicBatching, ModelQueuePolicy, ModelSequenceBatching,
    model_config::SchedulingChoice,
    model_input::Format,
    model_instance_group::Kind as InstanceKind,
    model_queue_policy::TimeoutAction,
    model_sequence_batching::{
        StrategyChoice, control::Kind as ControlKind, initial_state::StateData,
    },
    model_warmup::input::InputDataType,
};

/// `TYPE_FP32`, or the number for values outside the enum.
pub fn dtype_name(v: i32) -> String {
    DataType::try_from(v)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// `[-1,3,224]`: a shape as Triton's messages print it.
pub fn fmt_dims(d: &[i64]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Bytes per element of a fixed-size data type.
pub fn dtype_size(v: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(v).ok()? {
        TypeBool | TypeUint8 | TypeInt8 => 1,
        TypeUint16 | TypeInt16 | TypeFp16 | TypeBf16 => 2,
        TypeUint32 | TypeInt32 | TypeFp32 => 4,
        TypeUint64 | TypeInt64 | TypeFp64 => 8,
        TypeString | TypeInvalid => return None,
    })
}

/// Resolves `rel` against `base` lexically; `None` when it climbs out of `base` or is absolute.
pub fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut depth = 0i32;
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => {
                depth += 1;
                out.push(p);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

pub fn check(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    identity(cx, cfg, res);
    tensors(cx, cfg, res);
    scheduling(cx, cfg);
    if !res.is_ensemble {
        instances(cx, cfg, res);
    }
    warmup_state_parameters(cx, cfg);
}

fn identity(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    let m = cx.model.name.clone();
    if !cfg.name.is_empty() && cfg.name != m {
        cx.error(NAME_MISMATCH, "name", format!("unexpected directory name '{m}' for model '{}', directory name must equal model name", cfg.name));
    }
    let is_ensemble_platform = cfg.platform == "ensemble";
    let has_ensemble_sched = matches!(
        cfg.scheduling_choice,
        Some(SchedulingChoice::EnsembleScheduling(_))
    );
    if is_ensemble_platform {
        if !cfg.backend.is_empty() {
            cx.error(
                ENSEMBLE_PLATFORM,
                "backend",
                format!(
                    "Ensemble model '{m}' must have platform type 'ensemble' and empty backend type"
                ),
            );
        }
        if !has_ensemble_sched {
            cx.error(
                ENSEMBLE_PLATFORM,
                "platform",
                format!(
                    "ensemble scheduling must be set for ensemble {m} whose platform is ensemble"
                ),
            );
        }
        return;
    }
    if has_ensemble_sched {
        cx.error(
            ENSEMBLE_PLATFORM,
            "ensemble_scheduling",
            format!(
                "ensemble scheduling cannot be set for model '{m}' whose platform is not ensemble"
            ),
        );
    }
    if cfg.backend.is_empty()
        && !cfg.platform.is_empty()
        && !PLATFORMS.iter().any(|(p, _)| *p == cfg.platform)
    {
        let d = cx.error(
            PLATFORM,
            "platform",
            format!("unexpected platform type '{}' for {m}", cfg.platform),
        );
        if let Some((p, _)) = PLATFORMS.iter().find(|(p, _)| strsim(p, &cfg.platform)) {
            d.help = Some(format!("did you mean '{p}'?"));
        }
        return;
    }
    if !cfg.backend.is_empty() && !cfg.platform.is_empty() {
        let known = ["tensorflow", "tensorrt", "onnxruntime", "pytorch"];
        if known.contains(&cfg.backend.as_str())
            && !PLATFORMS
                .iter()
                .any(|(p, b)| *p == cfg.platform && *b == cfg.backend)
        {
            cx.error(
                PLATFORM,
                "platform",
                format!(
                    "unexpected 'platform' and 'backend' pair, got:{}, {}",
                    cfg.platform, cfg.backend
                ),
            );
        }
    }
    if res.backend.is_empty() {
        cx.error(UNKNOWN_BACKEND, "", format!("Invalid model name: Could not determine backend for model '{m}' with no backend in model configuration. Expected model name of the form 'model.<backend_name>'."))
            .help("set `backend:` (e.g. \"onnxruntime\", \"python\") or `platform:` in config.pbtxt");
        return;
    }
    if !cfg.runtime.is_empty()
        && inside(Path::new("/opt/tritonserver/backends"), &cfg.runtime).is_none()
    {
        cx.error(RUNTIME, "runtime", format!("backend library name '{}' escapes backend directory '/opt/tritonserver/backends', for model '{m}', check model config runtime field", cfg.runtime));
    }
    let library_in_model = cx
        .model
        .dir
        .join(format!("libtriton_{}.so", res.backend))
        .exists();
    if cfg.runtime.is_empty() && !library_in_model && !cx.opts.backends.contains(&res.backend) {
        let path = if cfg.backend.is_empty() {
            ""
        } else {
            "backend"
        };
        let available = cx.opts.backends.join(", ");
        let d = cx.warn(RUNTIME, path, format!("unable to find backend library for backend '{}', try specifying runtime on the model configuration.", res.backend));
        d.help = Some(match res.backend.as_str() {
            "vllm" => "the vllm backend ships only in the tritonserver:<yy.mm>-vllm-python-py3 image".to_string(),
            "tensorrtllm" => "the tensorrtllm backend ships only in the tritonserver:<yy.mm>-trtllm-python-py3 image".to_string(),
            _ => format!("the target image has: {available}; pass --backend {} if yours provides it", res.backend),
        });
    }
}

/// Whether two short identifiers are one edit apart or one is a prefix of the other (typo hints).
fn strsim(a: &str, b: &str) -> bool {
    if a.starts_with(b) || b.starts_with(a) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()] <= 1
}

struct Io<'a> {
    kind: &'static str,
    field: &'static str,
    name: &'a str,
    data_type: i32,
    dims: &'a [i64],
    reshape: Option<&'a [i64]>,
    format: i32,
    is_shape_tensor: bool,
    non_linear: bool,
    label_filename: &'a str,
}

/// Every input and output, in the configuration's order.
fn ios(cfg: &ModelConfig) -> Vec<Io<'_>> {
    let mut ios: Vec<Io> = Vec::new();
    for i in &cfg.input {
        ios.push(Io {
            kind: "input",
            field: "input",
            name: &i.name,
            data_type: i.data_type,
            dims: &i.dims,
            reshape: i.reshape.as_ref().map(|r| r.shape.as_slice()),
            format: i.format,
            is_shape_tensor: i.is_shape_tensor,
            non_linear: i.is_non_linear_format_io,
            label_filename: "",
        });
    }
    for o in &cfg.output {
        ios.push(Io {
            kind: "output",
            field: "output",
            name: &o.name,
            data_type: o.data_type,
            dims: &o.dims,
            reshape: o.reshape.as_ref().map(|r| r.shape.as_slice()),
            format: 0,
            is_shape_tensor: o.is_shape_tensor,
            non_linear: o.is_non_linear_format_io,
            label_filename: &o.label_filename,
        });
    }
    ios
}

/// Dims and reshape: each dimension positive or -1, a reshape Triton accepts.
fn tensor_dims(cx: &mut Cx, io: &Io, path: &str, label: &str, cfg: &ModelConfig) {
    let m = cx.model.name.clone();
    for (j, d) in io.dims.iter().enumerate() {
        if *d < 1 && *d != -1 {
            cx.error(TENSOR_DIMS, &format!("{path}.dims[{j}]"), format!("{label} dimension must be integer >= 1, or -1 to indicate a variable-size dimension for {m}"));
        }
    }
    if let Some(reshape) = io.reshape {
        let mut bad = false;
        for (j, d) in reshape.iter().enumerate() {
            if *d < 1 && *d != -1 {
                bad = true;
                cx.error(TENSOR_DIMS, &format!("{path}.reshape.shape[{j}]"), format!("{label} reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension for {m}"));
            }
        }
        if reshape.is_empty() && cfg.max_batch_size == 0 {
            cx.error(RESHAPE, &format!("{path}.reshape"), format!("{label} cannot have empty reshape for non-batching model as scalar tensors are not supported for {m}"));
        } else if !bad
            && !io.dims.is_empty()
            && let Some(msg) = reshape_mismatch(io.dims, reshape)
        {
            {
                cx.error(
                    RESHAPE,
                    &format!("{path}.reshape"),
                    format!("{label} has {msg} for {m}"),
                );
            }
        }
    }
}

/// Formats, shape tensors and non-linear IO where the backend has them.
fn tensor_formats(cx: &mut Cx, io: &Io, path: &str, res: &Resolved) {
    let m = cx.model.name.clone();
    let kind = io.kind;
    if kind == "input"
        && (io.format == Format::Nhwc as i32 || io.format == Format::Nchw as i32)
        && io.dims.len() != 3
    {
        cx.error(
            TENSOR_FORMAT,
            &format!("{path}.format"),
            format!("model input NHWC/NCHW require 3 dims for {m}"),
        );
    }
    let trt = res.platform == "tensorrt_plan" || res.backend == "tensorrt";
    if io.is_shape_tensor && !trt {
        cx.error(
            TENSOR_FORMAT,
            &format!("{path}.is_shape_tensor"),
            format!("shape tensors are only supported for TensorRT platform for {m}"),
        );
    }
    if io.non_linear {
        if !trt {
            cx.error(
                TENSOR_FORMAT,
                &format!("{path}.is_non_linear_format_io"),
                format!("Non-linear IO format is only supported for the TensorRT platform for {m}"),
            );
        } else if io.dims.len() != 3 {
            cx.error(
                TENSOR_FORMAT,
                &format!("{path}.is_non_linear_format_io"),
                format!("Non-linear IO format {kind} requires 3 dims for {m}"),
            );
        }
    }
}

/// A label file inside the model's directory, and there.
fn label_file(cx: &mut Cx, io: &Io, path: &str) {
    let m = cx.model.name.clone();
    if !io.label_filename.is_empty() {
        let lpath = format!("{path}.label_filename");
        match inside(&cx.model.dir, io.label_filename) {
            None => {
                cx.error(LABEL_FILE, &lpath, format!("label file path '{}' for output '{}' in model '{m}' is outside model directory", io.label_filename, io.name));
            }
            Some(p) if !p.is_file() => {
                cx.error(
                    LABEL_FILE,
                    &lpath,
                    format!(
                        "failed to open text file for read {}: No such file or directory",
                        p.display()
                    ),
                );
            }
            Some(_) => {}
        }
    }
}

fn tensors(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    let m = cx.model.name.clone();
    if cfg.max_batch_size < 0 {
        cx.error(
            MAX_BATCH_SIZE,
            "max_batch_size",
            format!("'max_batch_size' must be non-negative value for {m}"),
        );
    }
    let ios = ios(cfg);
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    for io in &ios {
        let idx = {
            let c = counters.entry(io.field).or_default();
            *c += 1;
            *c - 1
        };
        let path = format!("{}[{idx}]", io.field);
        let kind = io.kind;
        if io.name.is_empty() {
            cx.error(
                TENSOR_REQUIRED,
                &path,
                format!("model {kind} must specify 'name' for {m}"),
            );
            continue;
        }
        let label = format!("model {kind} '{}'", io.name);
        if let Some(first) = seen.insert((io.field, io.name), idx) {
            cx.error(DUPLICATE_TENSOR, &format!("{path}.name"), format!("{label} is declared twice ({}[{first}] and {path}); Triton 2.51 loads the model and silently uses the first, but no request can satisfy both (validate is stricter than Triton here on purpose)", io.field));
        }
        if io.data_type == 0 {
            cx.error(
                TENSOR_REQUIRED,
                &path,
                format!("{label} must specify 'data_type' for {m}"),
            );
        }
        if io.dims.is_empty() {
            cx.error(TENSOR_REQUIRED, &path, format!("{label} must specify 'dims' for {m}"))
                .help("dims are required even when batching; for a scalar use dims: [ 1 ] with reshape: { shape: [ ] }");
        }
        tensor_dims(cx, io, &path, &label, cfg);
        tensor_formats(cx, io, &path, res);
        label_file(cx, io, &path);
    }
    batch_io(cx, cfg, res);
}

/// Triton's reshape check: the same number of variable dimensions, and equal element counts
/// between them (an empty reshape of a single-element tensor is allowed).
fn reshape_mismatch(dims: &[i64], reshape: &[i64]) -> Option<&'static str> {
    let var = |s: &[i64]| s.iter().filter(|d| **d == -1).count();
    if var(dims) != var(reshape) {
        return Some("different number of variable-size dimensions for dims and reshape");
    }
    let segments = |s: &[i64]| -> Vec<i64> {
        s.split(|d| *d == -1)
            .map(|seg| seg.iter().product::<i64>())
            .collect()
    };
    if segments(dims) != segments(reshape) {
        return Some("different size for dims and reshape");
    }
    None
}

fn batch_io(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    if cfg.batch_input.is_empty() && cfg.batch_output.is_empty() {
        return;
    }
    let m = cx.model.name.clone();
    let inputs: HashSet<&str> = cfg.input.iter().map(|i| i.name.as_str()).collect();
    let outputs: HashSet<&str> = cfg.output.iter().map(|o| o.name.as_str()).collect();
    if matches!(
        res.backend.as_str(),
        "onnxruntime" | "pytorch" | "tensorflow" | "openvino" | "python"
    ) {
        cx.error(BATCH_IO, if cfg.batch_input.is_empty() { "batch_output" } else { "batch_input" }, format!("batch inputs and batch outputs are only supported for custom platform and TensorRT platform for {m}"));
    }
    for (i, bi) in cfg.batch_input.iter().enumerate() {
        let path = format!("batch_input[{i}]");
        let kind = crate::triton::model_config::inference::batch_input::Kind::try_from(bi.kind)
            .map(|k| k.as_str_name().to_string())
            .unwrap_or_else(|_| bi.kind.to_string());
        if bi.source_input.len() != 1 {
            cx.error(
                BATCH_IO,
                &path,
                format!(
                    "batch input kind '{kind}' expects 1 source input, got {}",
                    bi.source_input.len()
                ),
            );
        }
        if bi.data_type != DataType::TypeInt32 as i32 && bi.data_type != DataType::TypeFp32 as i32 {
            cx.error(
                BATCH_IO,
                &format!("{path}.data_type"),
                "batch input data type must be TYPE_INT32 or TYPE_FP32",
            );
        }
        for (j, s) in bi.source_input.iter().enumerate() {
            if !inputs.contains(s.as_str()) {
                cx.error(
                    BATCH_IO,
                    &format!("{path}.source_input[{j}]"),
                    format!("unknown source input name '{s}'"),
                );
            }
        }
    }
    let mut targets = HashSet::new();
    for (i, bo) in cfg.batch_output.iter().enumerate() {
        let path = format!("batch_output[{i}]");
        if bo.source_input.len() != 1 {
            cx.error(BATCH_IO, &path, format!("batch output kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got {}", bo.source_input.len()));
        }
        for (j, s) in bo.source_input.iter().enumerate() {
            if !inputs.contains(s.as_str()) {
                cx.error(
                    BATCH_IO,
                    &format!("{path}.source_input[{j}]"),
                    format!("unknown source input name '{s}'"),
                );
            }
        }
        for (j, t) in bo.target_name.iter().enumerate() {
            let tp = format!("{path}.target_name[{j}]");
            if !outputs.contains(t.as_str()) {
                cx.error(BATCH_IO, &tp, format!("unknown target output name '{t}'"));
            } else if !targets.insert(t.clone()) {
                cx.error(
                    BATCH_IO,
                    &tp,
                    format!("target output name '{t}' can only be specified once"),
                );
            }
        }
    }
}

fn scheduling(cx: &mut Cx, cfg: &ModelConfig) {
    let m = cx.model.name.clone();
    let mbs = i64::from(cfg.max_batch_size);
    match &cfg.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(db)) => dynamic_batching(cx, db, mbs, &m),
        Some(SchedulingChoice::SequenceBatching(sb)) => sequence_batching(cx, sb, mbs, &m),
        _ => {}
    }
    let cache = cfg.response_cache.as_ref().is_some_and(|c| c.enable);
    let decoupled = cfg
        .model_transaction_policy
        .as_ref()
        .is_some_and(|t| t.decoupled);
    if cache
        && matches!(
            cfg.scheduling_choice,
            Some(SchedulingChoice::SequenceBatching(_))
        )
    {
        cx.error(SEQUENCE, "response_cache", format!("Response Cache does not currently support model {m} with sequence batching scheduler. Please disable the response cache."));
    }
    if cache && decoupled {
        cx.error(SEQUENCE, "response_cache", format!("Response Cache does not currently support model {m} with 'decoupled' transaction policy. Please disable the response cache."));
    }
}

fn dynamic_batching(cx: &mut Cx, db: &ModelDynamicBatching, mbs: i64, m: &str) {
    if mbs == 0 {
        cx.warn(DYNAMIC_BATCHING, "dynamic_batching", format!("dynamic_batching is set but max_batch_size is 0, so model '{m}' does not batch"))
            .help("set max_batch_size > 0 (the dims then exclude the batch dimension), or remove dynamic_batching");
    }
    for (i, p) in db.preferred_batch_size.iter().enumerate() {
        let path = format!("dynamic_batching.preferred_batch_size[{i}]");
        if *p < 1 {
            cx.error(
                DYNAMIC_BATCHING,
                &path,
                format!("dynamic batching preferred size must be positive for {m}"),
            );
        } else if i64::from(*p) > mbs {
            cx.error(
                DYNAMIC_BATCHING,
                &path,
                format!("dynamic batching preferred size must be <= max batch size for {m}"),
            );
        }
    }
    let levels = db.priority_levels;
    if levels != 0 {
        if db.default_priority_level < 1 || db.default_priority_level > levels {
            cx.error(
                PRIORITY,
                "dynamic_batching.default_priority_level",
                format!("default priority level must be in range [1, {levels}] for {m}"),
            );
        }
        let mut keys: Vec<u64> = db.priority_queue_policy.keys().copied().collect();
        keys.sort();
        for k in keys {
            if k < 1 || k > levels {
                cx.error(PRIORITY, &format!("dynamic_batching.priority_queue_policy[{k}]"), format!("priority queue policy must have priority level in range [1, {levels}] for {m}"));
            }
        }
    }
    if db.preserve_ordering {
        if levels > 1 {
            cx.error(
                PRIORITY,
                "dynamic_batching.priority_levels",
                format!(
                    "Only one priority level is allowed when 'preserve_ordering' is true for {m}"
                ),
            );
        }
        let delays = |p: &ModelQueuePolicy| {
            p.timeout_action == TimeoutAction::Delay as i32 && p.default_timeout_microseconds != 0
        };
        if db.default_queue_policy.as_ref().is_some_and(delays) {
            cx.error(PRIORITY, "dynamic_batching.default_queue_policy", format!("Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {m}"));
        }
        let mut keys: Vec<u64> = db
            .priority_queue_policy
            .iter()
            .filter(|(_, p)| delays(p))
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        for k in keys {
            cx.error(PRIORITY, &format!("dynamic_batching.priority_queue_policy[{k}]"), format!("Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {m}"));
        }
    }
}

/// Control inputs: named, each tensor once, each kind once, with the values its kind needs.
fn sequence_controls(cx: &mut Cx, sb: &ModelSequenceBatching, m: &str) {
    let mut kinds_seen: HashMap<i32, usize> = HashMap::new();
    let mut tensors_seen: HashSet<&str> = HashSet::new();
    for (i, ci) in sb.control_input.iter().enumerate() {
        let path = format!("sequence_batching.control_input[{i}]");
        if ci.name.is_empty() {
            cx.error(
                SEQUENCE,
                &path,
                format!("sequence batching control tensor must have a name for {m}"),
            );
        }
        // One tensor may carry several controls; the same tensor named twice may not.
        if !ci.name.is_empty() && !tensors_seen.insert(ci.name.as_str()) {
            cx.error(SEQUENCE, &path, format!("sequence batching control tensor '{}' is specified for multiple control kinds for {m}", ci.name));
        }
        for (j, c) in ci.control.iter().enumerate() {
            let cpath = format!("{path}.control[{j}]");
            let kind_name = ControlKind::try_from(c.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_else(|_| c.kind.to_string());
            if let Some(first) = kinds_seen.insert(c.kind, i) {
                let _ = first;
                cx.error(
                    SEQUENCE,
                    &cpath,
                    format!("sequence batching specifies multiple {kind_name} tensors for {m}"),
                );
            }
            let set: Vec<(&str, usize)> = [
                ("int32_false_true", c.int32_false_true.len()),
                ("fp32_false_true", c.fp32_false_true.len()),
                ("bool_false_true", c.bool_false_true.len()),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
            if c.kind == ControlKind::ControlSequenceCorrid as i32 {
                if !set.is_empty() {
                    cx.error(SEQUENCE, &cpath, format!("sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for {kind_name} for {m}"));
                }
                let ok = [
                    DataType::TypeUint64,
                    DataType::TypeInt64,
                    DataType::TypeUint32,
                    DataType::TypeInt32,
                    DataType::TypeString,
                ];
                if !ok.iter().any(|d| *d as i32 == c.data_type) {
                    cx.error(SEQUENCE, &format!("{cpath}.data_type"), format!("unexpected data type for control {kind_name} for {m}. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"));
                }
            } else {
                match set.as_slice() {
                    [] => {
                        cx.error(SEQUENCE, &cpath, format!("sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for {kind_name} for {m}"));
                    }
                    [(field, n)] if *n != 2 => {
                        cx.error(SEQUENCE, &format!("{cpath}.{field}"), format!("sequence batching control '{field}' must have exactly 2 entries for {kind_name} for {m}"));
                    }
                    [_] => {}
                    _ => {
                        cx.error(SEQUENCE, &cpath, format!("sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' for {kind_name} for {m}"));
                    }
                }
            }
        }
    }
}

/// The strategy's bounds: preferred sizes within the batch, slot utilization in (0, 1].
fn sequence_strategy(cx: &mut Cx, sb: &ModelSequenceBatching, mbs: i64, m: &str) {
    match &sb.strategy_choice {
        Some(StrategyChoice::Oldest(o)) => {
            for (i, p) in o.preferred_batch_size.iter().enumerate() {
                let path = format!("sequence_batching.oldest.preferred_batch_size[{i}]");
                if *p < 1 {
                    cx.error(
                        SEQUENCE,
                        &path,
                        format!("sequence batching preferred batch size must be positive for {m}"),
                    );
                } else if i64::from(*p) > mbs {
                    cx.error(SEQUENCE, &path, format!("sequence batching preferred batch size must be <= max batch size for {m}"));
                }
            }
        }
        Some(StrategyChoice::Direct(d)) if !(0.0..=1.0).contains(&d.minimum_slot_utilization) => {
            cx.error(
                SEQUENCE,
                "sequence_batching.direct.minimum_slot_utilization",
                format!(
                    "sequence batching minimum slot utilization must be in range (0.0, 1.0] for {m}"
                ),
            );
        }
        _ => {}
    }
}

/// Implicit state (sequence_batch_scheduler.cc): unique inputs, initial state that matches.
fn sequence_state(cx: &mut Cx, sb: &ModelSequenceBatching) {
    let mut names = HashSet::new();
    for (i, st) in sb.state.iter().enumerate() {
        let path = format!("sequence_batching.state[{i}]");
        let input = st.input_name.as_str();
        if !names.insert(input) {
            cx.error(
                WARMUP_STATE,
                &format!("{path}.input_name"),
                format!("State input name '{input}' specified more than once."),
            );
        }
        if st.initial_state.len() > 1 {
            cx.error(WARMUP_STATE, &format!("{path}.initial_state"), format!("initial_state field for state input '{input}' must contain exactly one or zero element. Found '{}' elements.", st.initial_state.len()));
        }
        for (j, is) in st.initial_state.iter().enumerate() {
            let ipath = format!("{path}.initial_state[{j}]");
            if is.data_type != st.data_type {
                cx.error(WARMUP_STATE, &format!("{ipath}.data_type"), format!("The data type used for 'initial_state' field of state '{input}' does not match the state data type."));
            }
            if is.name.is_empty() {
                cx.error(WARMUP_STATE, &ipath, format!("Field 'name' must be set when using initial_state for state input '{input}'."));
            }
            if is.dims.len() != st.dims.len() {
                cx.error(WARMUP_STATE, &format!("{ipath}.dims"), format!("Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input '{input}'. {} != {}", is.dims.len(), st.dims.len()));
            } else if is.dims.contains(&-1) {
                cx.error(WARMUP_STATE, &format!("{ipath}.dims"), format!("'initial_state' field for state input name '{input}' contains variable dimensions."));
            } else {
                for (a, b) in is.dims.iter().zip(&st.dims) {
                    if *b != -1 && a != b {
                        cx.error(WARMUP_STATE, &format!("{ipath}.dims"), format!("'initial_state' dim for input name '{input}' doesn't match 'state' dim description. {a} != {b}"));
                    }
                }
            }
            match &is.state_data {
                None => {
                    cx.error(
                        WARMUP_STATE,
                        &ipath,
                        format!(
                            "initial_state setting expects state'{input}' to have state_data set"
                        ),
                    );
                }
                Some(StateData::DataFile(f)) => {
                    let dir = cx.model.dir.join("initial_state");
                    match inside(&dir, f) {
                        Some(p) if p.is_file() => {}
                        _ => {
                            cx.error(WARMUP_STATE, &format!("{ipath}.data_file"), format!("failed to open initial state file {}: No such file or directory", dir.join(f).display()));
                        }
                    }
                }
                Some(StateData::ZeroData(_)) => {}
            }
        }
    }
}

fn sequence_batching(cx: &mut Cx, sb: &ModelSequenceBatching, mbs: i64, m: &str) {
    sequence_controls(cx, sb, m);
    sequence_strategy(cx, sb, mbs, m);
    sequence_state(cx, sb);
}

fn instances(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    let m = cx.model.name.clone();
    for (i, g) in cfg.instance_group.iter().enumerate() {
        let path = format!("instance_group[{i}]");
        let gname = if g.name.is_empty() {
            format!("{m}_{i}")
        } else {
            g.name.clone()
        };
        let ig = format!("instance group {gname} of model {m}");
        let kind = InstanceKind::try_from(g.kind).ok();
        if matches!(kind, Some(InstanceKind::Cpu | InstanceKind::Model)) && !g.gpus.is_empty() {
            let k = kind.map(|k| k.as_str_name()).unwrap_or_default();
            cx.error(
                INSTANCE_GROUP,
                &format!("{path}.gpus"),
                format!("{ig} has kind {k} but specifies one or more GPUs"),
            );
        }
        if kind.is_none() {
            cx.error(
                INSTANCE_GROUP,
                &format!("{path}.kind"),
                format!("instance_group kind {} not supported", g.kind),
            );
        }
        if !g.profile.is_empty() {
            let trt = res.platform == "tensorrt_plan" || res.backend == "tensorrt";
            if !trt {
                cx.error(INSTANCE_GROUP, &format!("{path}.profile"), format!("{ig} and platform {}specifies profile field which is only supported for TensorRT models", res.platform));
            }
            for (j, p) in g.profile.iter().enumerate() {
                let ppath = format!("{path}.profile[{j}]");
                if p.is_empty() {
                    cx.error(INSTANCE_GROUP, &ppath, "profile name must not be empty");
                } else if !p.bytes().all(|b| b.is_ascii_digit()) {
                    cx.error(INSTANCE_GROUP, &ppath, format!("{ig} specifies invalid profile {p}. The field should contain the string representation of a non-negative integer."));
                }
            }
        }
        if g.count < 0 {
            cx.warn(
                INSTANCE_GROUP,
                &format!("{path}.count"),
                format!("{ig} has count {} <= 0; Triton uses 1", g.count),
            );
        }
        for (j, id) in g.gpus.iter().enumerate() {
            if *id < 0 {
                cx.warn(
                    INSTANCE_GROUP,
                    &format!("{path}.gpus[{j}]"),
                    format!("{ig} specifies invalid or unsupported gpu id {id}"),
                );
            }
        }
    }
}

/// Warm-up inputs: every required input given, fixed sizes, data files inside `warmup/`.
fn warmup(cx: &mut Cx, cfg: &ModelConfig) {
    let m = cx.model.name.clone();
    for (i, w) in cfg.model_warmup.iter().enumerate() {
        // Triton sends each sample as a request at load time: one that lacks a required input
        // fails, and the model with it.
        let required: Vec<&str> = cfg
            .input
            .iter()
            .filter(|t| !t.optional && !t.name.is_empty())
            .map(|t| t.name.as_str())
            .collect();
        let given = required
            .iter()
            .filter(|n| w.inputs.contains_key(**n))
            .count();
        for name in required.iter().filter(|n| !w.inputs.contains_key(**n)) {
            cx.error(
                WARMUP_STATE,
                &format!("model_warmup[{i}].inputs"),
                format!(
                    "warmup '{}' gives no data for input '{name}': Triton's warm-up request fails with 'expected {} inputs but got {given} inputs for model '{m}'' and the model does not load",
                    w.name,
                    required.len()
                ),
            );
        }
        let mut names: Vec<&String> = w.inputs.keys().collect();
        names.sort();
        for name in names {
            let input = &w.inputs[name];
            let path = format!("model_warmup[{i}].inputs[{name:?}]");
            if input.dims.iter().any(|d| *d < 0) {
                cx.error(WARMUP_STATE, &format!("{path}.dims"), format!("warmup setting expects all variable-size dimensions are specified for input '{name}'"));
            }
            if let Some(InputDataType::InputDataFile(f)) = &input.input_data_type {
                let dir = cx.model.dir.join("warmup");
                let p = inside(&dir, f);
                match p.as_ref().and_then(|p| std::fs::metadata(p).ok()) {
                    None => {
                        cx.error(
                            WARMUP_STATE,
                            &format!("{path}.input_data_file"),
                            format!(
                                "failed to open warmup data file {}: No such file or directory",
                                dir.join(f).display()
                            ),
                        );
                    }
                    Some(meta) => {
                        if let Some(size) = dtype_size(input.data_type)
                            && input.dims.iter().all(|d| *d >= 0)
                        {
                            let need = input.dims.iter().product::<i64>() as u64 * size as u64;
                            if meta.len() < need {
                                cx.error(WARMUP_STATE, &format!("{path}.input_data_file"), format!("warmup setting expects {need} bytes, but the data provided from {}only has {} bytes", dir.join(f).display(), meta.len()));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Parameters that name files: the execution environment and the batch strategy.
fn file_parameters(cx: &mut Cx, cfg: &ModelConfig) {
    let m = cx.model.name.clone();
    if let Some(p) = cfg.parameters.get("EXECUTION_ENV_PATH") {
        let v = &p.string_value;
        let path = "parameters[\"EXECUTION_ENV_PATH\"]";
        if let Some(rel) = v.strip_prefix("$$TRITON_MODEL_DIRECTORY") {
            match inside(&cx.model.dir, rel.trim_start_matches('/')) {
                None => {
                    cx.error(WARMUP_STATE, path, format!("EXECUTION_ENV_PATH '{v}' must not escape from the $$TRITON_MODEL_DIRECTORY"));
                }
                Some(p) if !p.exists() => {
                    cx.error(
                        WARMUP_STATE,
                        path,
                        format!(
                            "EXECUTION_ENV_PATH '{v}' does not exist in model '{m}' ({})",
                            p.display()
                        ),
                    );
                }
                Some(_) => {}
            }
        } else if !v.starts_with('/') {
            cx.error(WARMUP_STATE, path, format!("EXECUTION_ENV_PATH '{v}' must be an absolute path or start with $$TRITON_MODEL_DIRECTORY"));
        }
    }
    if let Some(p) = cfg.parameters.get("TRITON_BATCH_STRATEGY_PATH") {
        let v = &p.string_value;
        let path = "parameters[\"TRITON_BATCH_STRATEGY_PATH\"]";
        if matches!(
            cfg.scheduling_choice,
            Some(SchedulingChoice::SequenceBatching(_))
        ) {
            cx.warn(WARMUP_STATE, path, "TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence batcher, using default batching strategy");
        } else if !v.starts_with('/') {
            match inside(&cx.model.dir, v) {
                None => {
                    cx.error(
                        WARMUP_STATE,
                        path,
                        "Batching library path escapes model repository.",
                    );
                }
                Some(p) if !p.is_file() => {
                    cx.error(
                        WARMUP_STATE,
                        path,
                        format!("Batching library path not found: {}", p.display()),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

/// Custom metric buckets.
fn model_metrics(cx: &mut Cx, cfg: &ModelConfig) {
    if let Some(mm) = &cfg.model_metrics {
        for (i, mc) in mm.metric_control.iter().enumerate() {
            let path = format!("model_metrics.metric_control[{i}]");
            match &mc.metric_identifier {
                None => {
                    cx.error(
                        WARMUP_STATE,
                        &path,
                        "metric control must specify 'metric_identifier'",
                    );
                }
                Some(id) if id.family.is_empty() => {
                    cx.error(
                        WARMUP_STATE,
                        &format!("{path}.metric_identifier"),
                        "metric identifier must specify non-empty 'family'",
                    );
                }
                Some(id) if id.family != "nv_inference_first_response_histogram_ms" => {
                    cx.warn(WARMUP_STATE, &format!("{path}.metric_identifier.family"), format!("Metric family '{}' in 'metric_identifier' is not a customizable metric in Triton core.", id.family));
                }
                Some(_) => {}
            }
            use crate::triton::model_config::inference::model_metrics::metric_control::MetricOptions;
            match &mc.metric_options {
                None => {
                    cx.error(
                        WARMUP_STATE,
                        &path,
                        "metric control must specify 'histogram_options'",
                    );
                }
                Some(MetricOptions::HistogramOptions(h)) if h.buckets.is_empty() => {
                    cx.error(
                        WARMUP_STATE,
                        &format!("{path}.histogram_options"),
                        "histogram options must specify non-empty 'buckets'",
                    );
                }
                Some(_) => {}
            }
        }
    }
}

fn warmup_state_parameters(cx: &mut Cx, cfg: &ModelConfig) {
    warmup(cx, cfg);
    file_parameters(cx, cfg);
    model_metrics(cx, cfg);
}
