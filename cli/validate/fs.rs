//! Repository and filesystem rules (TD001–TD012): model and version directories, symlinks,
//! configuration files and model files.

use std::collections::HashMap;
use std::path::Path;

use super::diagnostic::{Diagnostic, Severity};
use super::rules::*;
use super::{Cx, Resolved, resolve};
use crate::triton::model_config::ModelConfig;
use crate::triton::model_config::inference::model_version_policy::PolicyChoice;
use crate::triton::model_repo::{ModelDir, ModelRepo, VersionName};
use crate::triton::pbtxt::{NoteKind, ParseErrorKind};

/// Root directories that are not models but that Triton still tries to load.
pub fn is_system_dir(name: &str) -> bool {
    name.starts_with('.') || name == "lost+found" || name == "__pycache__"
}

pub fn check_repository(repo: &ModelRepo, only: Option<&str>, out: &mut Vec<Diagnostic>) {
    if only.is_none() {
        if repo.models.is_empty() {
            out.push(
                Diagnostic::new(
                    REPO_PATH,
                    Severity::Warning,
                    format!(
                        "the repository '{}' holds no model directories",
                        repo.root.display()
                    ),
                )
                .file(&repo.root),
            );
        }
        for m in repo.models.iter().filter(|m| is_system_dir(&m.name)) {
            let msg = if m.has_entry("config.pbtxt") {
                format!("directory '{}' is loaded as a model", m.name)
            } else {
                format!(
                    "Poll failed for model directory '{}': failed to open text file for read {}/config.pbtxt: No such file or directory",
                    m.name,
                    m.dir.display()
                )
            };
            out.push(
                Diagnostic::new(NON_MODEL_DIR, Severity::Error, msg)
                    .model(&m.name)
                    .file(&m.dir)
                    .with_help("Triton loads every root directory as a model and, with the default --exit-on-error, fails to start; remove it from the repository"),
            );
        }
    }
    for m in &repo.models {
        if only.is_some_and(|o| o != m.name) {
            continue;
        }
        walk_symlinks(&repo.root, &m.dir, &m.name, out);
    }
}

fn walk_symlinks(root: &Path, dir: &Path, model: &str, out: &mut Vec<Diagnostic>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let root_canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            match path.canonicalize() {
                // Triton 2.51 loads the model (its backend never opens the file) but logs
                // "Failed to determine modification time" for it; an image carries the link
                // without its target.
                Err(_) => out.push(
                    Diagnostic::new(
                        SYMLINK,
                        Severity::Warning,
                        format!("failed to stat file {}", path.display()),
                    )
                    .model(model)
                    .file(&path)
                    .with_help(
                        "the symlink is dangling: Triton cannot read its modification time (so --model-control-mode=poll never sees it change), and the image gets the link without a target; remove it or copy the file in",
                    ),
                ),
                Ok(target) => {
                    if !target.starts_with(&root_canon) {
                        out.push(
                            Diagnostic::new(
                                SYMLINK,
                                Severity::Warning,
                                format!("{} links outside the repository to {}", path.display(), target.display()),
                            )
                            .model(model)
                            .file(&path)
                            .with_help("an image build copies the link, not its target; copy the file into the repository"),
                        );
                    }
                    // Do not follow links into directories: a loop would never end.
                }
            }
        } else if meta.is_dir() {
            walk_symlinks(root, &path, model, out);
        }
    }
}

/// TD012: a model name may appear in only one of the repositories given.
pub fn check_unique_across(repos: &[(ModelRepo, Option<String>)], out: &mut Vec<Diagnostic>) {
    if repos.len() < 2 {
        return;
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for (repo, only) in repos {
        for m in &repo.models {
            if is_system_dir(&m.name) || only.as_deref().is_some_and(|o| o != m.name) {
                continue;
            }
            if let Some(first) = seen.insert(&m.name, &repo.root) {
                out.push(
                    Diagnostic::new(
                        DUPLICATE_MODEL,
                        Severity::Error,
                        format!(
                            "failed to poll model '{}': not unique across all model repositories",
                            m.name
                        ),
                    )
                    .model(&m.name)
                    .file(&m.dir)
                    .with_help(format!(
                        "'{}' is also in {}",
                        m.name,
                        first.display()
                    )),
                );
            }
        }
    }
}

/// Versions Triton would load: the numeric version directories selected by the version policy.
pub fn selected_versions(m: &ModelDir, cfg: &ModelConfig) -> Vec<i64> {
    let mut present: Vec<i64> = m.versions().iter().map(|(v, _)| *v).collect();
    present.dedup();
    let choice = cfg
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref());
    let mut out: Vec<i64> = match choice {
        None => present.iter().rev().take(1).copied().collect(),
        Some(PolicyChoice::Latest(l)) => present
            .iter()
            .rev()
            .take(l.num_versions as usize)
            .copied()
            .collect(),
        Some(PolicyChoice::All(_)) => present.clone(),
        Some(PolicyChoice::Specific(s)) => present
            .iter()
            .filter(|v| s.versions.contains(v))
            .copied()
            .collect(),
    };
    out.sort();
    out
}

/// The file a backend loads from each version directory, if the linter knows it.
pub fn default_model_file(res: &Resolved, cfg: &ModelConfig) -> Option<String> {
    if res.is_ensemble {
        return None;
    }
    if !cfg.default_model_filename.is_empty() {
        return Some(cfg.default_model_filename.clone());
    }
    let f = match (res.backend.as_str(), res.platform.as_str()) {
        ("tensorrt", _) => "model.plan",
        ("onnxruntime", _) => "model.onnx",
        ("pytorch", "torch_aoti") => "model.pt2",
        ("pytorch", _) => "model.pt",
        ("tensorflow", "tensorflow_savedmodel") => "model.savedmodel",
        ("tensorflow", _) => "model.graphdef",
        ("openvino", _) => "model.xml",
        ("python", _) => "model.py",
        ("dali", _) => "model.dali",
        ("vllm", _) => "model.json",
        _ => return None,
    };
    Some(f.to_string())
}

pub fn check_model(cx: &mut Cx) {
    let m = cx.model;
    if is_system_dir(&m.name) {
        return;
    }
    // Hidden directories inside the model sort first and confuse autofill.
    for e in m
        .entries
        .iter()
        .filter(|e| e.is_dir && e.name.starts_with('.'))
    {
        cx.emit_path(NON_MODEL_DIR, Severity::Warning, &m.dir.join(&e.name), format!("ignore version directory '{}' which fails to convert to integral number", e.name))
            .help("hidden directories sort before the versions, and Triton's autofill only looks at the first subdirectory; remove it");
    }

    config_file_rules(cx);

    let default_cfg = ModelConfig::default();
    let cfg = m.parsed().map(|p| &p.config).unwrap_or(&default_cfg);
    let res = resolve(m, cfg);
    version_rules(cx, cfg, &res);
}

fn config_file_rules(cx: &mut Cx) {
    let m = cx.model;
    // TD005: configs/ without a planned --model-config-name, or a missing named file.
    if let Some(dir) = m.entries.iter().find(|e| e.is_dir && e.name == "configs") {
        let path = m.dir.join(&dir.name);
        match &cx.opts.model_config_name {
            None => {
                cx.emit_path(CONFIG_NAME, Severity::Warning, &path, "configs/ holds alternative configurations, but no --model-config-name is set, so Triton reads config.pbtxt")
                    .help("pass --model-config-name <name> to validate (and set it in the deployment's Triton flags) if you mean one of them");
            }
            Some(name) if !path.join(format!("{name}.pbtxt")).is_file() => {
                cx.emit_path(CONFIG_NAME, Severity::Warning, &path, format!("configs/{name}.pbtxt does not exist; Triton silently falls back to config.pbtxt"));
            }
            Some(_) => {}
        }
    }

    if let Some(err) = &m.config_read_error {
        let msg = format!(
            "failed to read text proto from {}: {err}",
            m.config_file.display()
        );
        cx.error(PARSE, "", msg);
        return;
    }
    match &m.config {
        None => {
            let autofills = matches!(
                resolve(m, &ModelConfig::default()).backend.as_str(),
                "tensorrt" | "onnxruntime" | "openvino" | "python"
            );
            let msg = format!(
                "failed to open text file for read {}: No such file or directory",
                m.config_file.display()
            );
            let file = m.config_file.clone();
            if autofills && cx.opts.auto_complete {
                cx.emit_path(MISSING_CONFIG, Severity::Warning, &file, msg)
                    .help("Triton will autofill the configuration from the model file; write a config.pbtxt to pin batching, instances and tensor shapes");
            } else {
                cx.emit_path(MISSING_CONFIG, Severity::Error, &file, msg);
            }
        }
        Some(Err(e)) => {
            let src = m.config_source.as_deref().unwrap_or("");
            let (line, col) = crate::triton::pbtxt::line_col(src, e.span.start);
            let rule = match e.kind {
                ParseErrorKind::Syntax => PARSE,
                ParseErrorKind::UnknownField => UNKNOWN_FIELD,
                ParseErrorKind::UnknownEnum => UNKNOWN_ENUM,
                ParseErrorKind::Repeated => REPEATED_FIELD,
                ParseErrorKind::Placeholder => PLACEHOLDER,
            };
            let msg = format!(
                "Error parsing text-format inference.ModelConfig: {line}:{col}: {}",
                e.message
            );
            let d = Diagnostic::new(rule, Severity::Error, msg)
                .model(&m.name)
                .file(&m.config_file)
                .span(Some(e.span));
            let d = match e.kind {
                ParseErrorKind::Placeholder => d.with_help(
                    "render the template (e.g. fill_template.py) before packaging the repository",
                ),
                ParseErrorKind::Syntax if src[e.span.start.min(src.len())..].starts_with("//") => {
                    d.with_help("comments in config.pbtxt start with '#'")
                }
                _ => d,
            };
            cx.out.push(d);
        }
        Some(Ok(parsed)) => {
            let notes = parsed.source.notes.clone();
            for n in notes {
                let src = m.config_source.as_deref().unwrap_or("");
                let text = &src[n.span.start..n.span.end];
                let msg = match n.kind {
                    NoteKind::DuplicateField => format!(
                        "field '{}' is set more than once; Triton keeps the last value (it only accepts this because the first value was the default)",
                        n.path
                    ),
                    NoteKind::DuplicateKey => format!(
                        "map key {} is set more than once; Triton silently keeps the last value",
                        n.path
                    ),
                    NoteKind::OctalLiteral => {
                        let v = u64::from_str_radix(&text[1..], 8).unwrap_or(0);
                        format!(
                            "integer literal {text} has a leading zero and is read as octal ({v})"
                        )
                    }
                };
                let d = Diagnostic::new(DUPLICATE_KEY, Severity::Warning, msg)
                    .model(&m.name)
                    .file(&m.config_file)
                    .span(Some(n.span));
                cx.out.push(d);
            }
        }
    }
}

fn version_rules(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved) {
    let m = cx.model;
    let mut by_number: HashMap<i64, Vec<&str>> = HashMap::new();
    for e in m
        .entries
        .iter()
        .filter(|e| e.is_dir && !e.name.starts_with('.'))
    {
        let path = m.dir.join(&e.name);
        match VersionName::of(&e.name) {
            VersionName::Reserved => {}
            VersionName::LeadingZero => {
                cx.emit_path(LEADING_ZERO, Severity::Warning, &path, format!("ignore version directory '{}' which contains leading zeros in its directory name", e.name));
            }
            VersionName::NotNumeric => {
                cx.emit_path(
                    NON_NUMERIC_VERSION,
                    Severity::Warning,
                    &path,
                    format!(
                        "ignore version directory '{}' which fails to convert to integral number",
                        e.name
                    ),
                );
            }
            VersionName::Prefix(v) => {
                cx.emit_path(VERSION_ALIAS, Severity::Error, &path, format!("version directory '{}' is read by Triton as version {v} (std::stoll stops at the first non-digit)", e.name))
                    .help(format!("rename it to '{v}', or move it out of the model directory"));
                by_number.entry(v).or_default().push(&e.name);
            }
            VersionName::Number(v) => by_number.entry(v).or_default().push(&e.name),
        }
    }
    let mut dups: Vec<_> = by_number.iter().filter(|(_, d)| d.len() > 1).collect();
    dups.sort();
    for (v, dirs) in dups {
        cx.emit_path(
            VERSION_ALIAS,
            Severity::Error,
            &m.dir,
            format!(
                "directories {} all map to version {v}",
                dirs.iter()
                    .map(|d| format!("'{d}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    let choice = cfg
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref());
    if let Some(PolicyChoice::Specific(s)) = choice {
        for (i, v) in s.versions.iter().enumerate() {
            if !by_number.contains_key(v) {
                cx.warn(MISSING_SPECIFIC_VERSION, &format!("version_policy.specific.versions[{i}]"), format!("version {v} is specified for model '{}', but the version directory is not present", m.name));
            }
        }
    }
    let selected = selected_versions(m, cfg);
    if selected.is_empty() {
        let d = cx.error(
            NO_VERSION,
            "version_policy",
            format!(
                "at least one version must be available under the version policy of model '{}'",
                m.name
            ),
        );
        if res.is_ensemble {
            d.help("an ensemble needs an (empty) version directory such as 1/; git drops empty directories, so keep a placeholder file in it");
        } else if by_number.is_empty() {
            d.help("put the model file in a numeric version directory, e.g. 1/");
        }
        if d.span.is_none() {
            d.file = Some(m.dir.clone());
        }
        return;
    }
    for v in &selected {
        let Some(dir) = by_number.get(v).and_then(|d| d.first()) else {
            continue;
        };
        let vdir = m.dir.join(dir);
        if std::fs::read_dir(&vdir)
            .map(|mut r| r.next().is_none())
            .unwrap_or(false)
        {
            cx.emit_path(NO_VERSION, Severity::Warning, &vdir, format!("version directory '{dir}' is empty; git, S3 sync and zip drop empty directories"))
                .help("keep a placeholder file (e.g. .gitkeep) in it");
        }
        model_file_rule(cx, cfg, res, &vdir);
    }
}

fn model_file_rule(cx: &mut Cx, cfg: &ModelConfig, res: &Resolved, vdir: &Path) {
    let Some(file) = default_model_file(res, cfg) else {
        return;
    };
    let path = vdir.join(&file);
    let inst = cfg
        .instance_group
        .first()
        .map(|g| g.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{}_0", cx.model.name));
    if !path.exists() {
        let msg = if res.backend == "openvino" {
            format!(
                "unable to find '{}' for model '{}'",
                path.display(),
                cx.model.name
            )
        } else {
            format!(
                "unable to find '{}' for model instance '{inst}'",
                path.display()
            )
        };
        let path_for_diag = path.clone();
        cx.emit_path(MISSING_MODEL_FILE, Severity::Error, &path_for_diag, msg);
        return;
    }
    match res.backend.as_str() {
        "onnxruntime" if path.is_dir() && !path.join("model.onnx").is_file() => {
            cx.emit_path(
                MISSING_MODEL_FILE,
                Severity::Error,
                &path,
                format!(
                    "unable to find '{}' for model instance '{inst}'",
                    path.join("model.onnx").display()
                ),
            );
        }
        "openvino" => {
            let bin = path.with_extension("bin");
            if !bin.exists() {
                cx.emit_path(
                    MISSING_MODEL_FILE,
                    Severity::Warning,
                    &bin,
                    format!(
                        "'{}' is missing; OpenVINO reads the weights from it",
                        bin.display()
                    ),
                );
            }
        }
        "python" => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.contains("class TritonPythonModel") {
                cx.emit_path(
                    MISSING_MODEL_FILE,
                    Severity::Warning,
                    &path,
                    format!(
                        "'{}' does not define class TritonPythonModel",
                        path.display()
                    ),
                );
            }
        }
        _ => {}
    }
}
