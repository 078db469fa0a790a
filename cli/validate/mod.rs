//! Stage 1, validation: judge a model repository the way Triton would load it, before it ships.
//!
//! In: model repository paths (read through [`crate::triton::model_repo`]). Out: a [`Report`]
//! (the models Triton would load and every diagnostic with its file, line and column), rendered
//! as text by [`render`].
//!
//! [`validate`] reads the repositories ([`crate::triton::model_repo`]), applies every rule of
//! [`rules::ALL`] and returns a [`Report`]: the models Triton would load and the diagnostics.

pub mod diagnostic;
mod ensemble;
mod fs;
mod model;
mod onnx;
pub mod render;
pub mod rules;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use diagnostic::{Diagnostic, Severity};

use crate::triton::model_config::ModelConfig;
use crate::triton::model_repo::{ModelDir, ModelRepo};
use crate::triton::pbtxt::Span;

/// How to validate.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--model-config-name`: read `configs/<name>.pbtxt` where present.
    pub model_config_name: Option<String>,
    /// Triton's auto-complete (on unless `--disable-auto-complete-config`).
    pub auto_complete: bool,
    /// Cross-check ONNX models against their configs.
    pub onnx: bool,
    /// Backends the target image provides (the `-py3` image's by default).
    pub backends: Vec<String>,
}

/// The backends of the standard `tritonserver:<yy.mm>-py3` image.
pub const DEFAULT_BACKENDS: &[&str] = &[
    "tensorrt",
    "onnxruntime",
    "pytorch",
    "tensorflow",
    "openvino",
    "python",
    "dali",
    "fil",
    "identity",
    "repeat",
    "square",
];

impl Default for Options {
    fn default() -> Self {
        Options {
            model_config_name: None,
            auto_complete: true,
            onnx: true,
            backends: DEFAULT_BACKENDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A model as Triton would load it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelSummary {
    /// The model's name.
    pub name: String,
    /// The backend (`python`, `onnxruntime`, …), as resolved.
    pub backend: String,
    /// The platform (`onnxruntime_onnx`, …), as resolved.
    pub platform: String,
    /// The versions Triton would load.
    pub versions: Vec<i64>,
}

/// The outcome of `validate`.
#[derive(Debug, Default)]
pub struct Report {
    /// Every model found.
    pub models: Vec<ModelSummary>,
    /// Every finding.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of every config that diagnostics point into, for snippets and line numbers.
    pub sources: HashMap<PathBuf, String>,
}

impl Report {
    /// Findings that are errors.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Findings that are warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// Valid: no errors (and, with `strict`, no warnings either).
    pub fn is_valid(&self, strict: bool) -> bool {
        if strict {
            self.diagnostics.is_empty()
        } else {
            self.errors() == 0
        }
    }

    /// The text of the file `d` is in, when it was read.
    pub fn source_of(&self, d: &Diagnostic) -> Option<&str> {
        d.file
            .as_ref()
            .and_then(|f| self.sources.get(f))
            .map(String::as_str)
    }
}

/// Failures that stop validation before any rule runs (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The path given is not a directory.
    #[error("repository path is not a valid directory: {0}")]
    NotADirectory(PathBuf),
    /// A directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The backend and platform a model resolves to, and the model file its backend reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// The backend (`python`, `onnxruntime`, …), as resolved.
    pub backend: String,
    /// The platform (`onnxruntime_onnx`, …), as resolved.
    pub platform: String,
    /// Whether it is an ensemble.
    pub is_ensemble: bool,
}

/// Validates one or more repositories, or a single model directory (a directory holding
/// `config.pbtxt`, or named by `--model-config-name`); for a single model, its siblings are read
/// as the context of ensemble checks but only the model itself is judged.
pub fn validate(paths: &[PathBuf], opts: &Options) -> Result<Report, ValidateError> {
    let mut report = Report::default();
    let mut repos = Vec::new();
    for path in paths {
        if !path.is_dir() {
            return Err(ValidateError::NotADirectory(path.clone()));
        }
        let io = |source| ValidateError::Io {
            path: path.clone(),
            source,
        };
        let is_model_dir = path.join("config.pbtxt").is_file()
            || (path.join("configs").is_dir() && opts.model_config_name.is_some());
        if is_model_dir {
            let parent = path
                .canonicalize()
                .map_err(io)?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            let mut repo =
                ModelRepo::read(&parent, opts.model_config_name.as_deref()).map_err(io)?;
            let name = path
                .canonicalize()
                .map_err(io)?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Report paths as the user gave them.
            for m in &mut repo.models {
                if m.name == name {
                    m.config_file =
                        path.join(m.config_file.strip_prefix(&m.dir).unwrap_or(&m.config_file));
                    m.dir = path.clone();
                }
            }
            repos.push((repo, Some(name)));
        } else {
            let repo = ModelRepo::read(path, opts.model_config_name.as_deref()).map_err(io)?;
            repos.push((repo, None));
        }
    }

    for (repo, only) in &repos {
        fs::check_repository(repo, only.as_deref(), &mut report.diagnostics);
    }
    fs::check_unique_across(&repos, &mut report.diagnostics);

    for (repo, only) in &repos {
        let resolved: HashMap<&str, Option<Resolved>> = repo
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.parsed().map(|p| resolve(m, &p.config))))
            .collect();
        for m in &repo.models {
            if only.as_deref().is_some_and(|o| o != m.name) {
                continue;
            }
            let mut cx = Cx {
                model: m,
                opts,
                out: Vec::new(),
            };
            fs::check_model(&mut cx);
            if let Some(parsed) = m.parsed() {
                let res = resolved[m.name.as_str()].clone().unwrap_or_default();
                model::check(&mut cx, &parsed.config, &res);
                if res.is_ensemble {
                    ensemble::check(&mut cx, &parsed.config, repo, &resolved);
                }
                if opts.onnx && res.backend == "onnxruntime" {
                    onnx::check(&mut cx, &parsed.config);
                }
            }
            if !fs::is_system_dir(&m.name) {
                let default_cfg = ModelConfig::default();
                let cfg = m.parsed().map(|p| &p.config).unwrap_or(&default_cfg);
                let res = resolve(m, cfg);
                report.models.push(ModelSummary {
                    name: m.name.clone(),
                    backend: res.backend,
                    platform: res.platform,
                    versions: fs::selected_versions(m, cfg),
                });
            }
            if let Some(src) = &m.config_source {
                report.sources.insert(m.config_file.clone(), src.clone());
            }
            report.diagnostics.extend(cx.out);
        }
    }
    report.diagnostics.sort_by(|a, b| {
        (a.model.as_deref(), a.file.as_ref(), a.span.map(|s| s.start)).cmp(&(
            b.model.as_deref(),
            b.file.as_ref(),
            b.span.map(|s| s.start),
        ))
    });
    Ok(report)
}

/// Per-model checking context: where diagnostics go and how to point into the config.
pub(crate) struct Cx<'a> {
    pub model: &'a ModelDir,
    pub opts: &'a Options,
    pub out: Vec<Diagnostic>,
}

impl Cx<'_> {
    /// Span of a field path in the config, or of its nearest written ancestor.
    pub fn at(&self, path: &str) -> Option<Span> {
        let parsed = self.model.parsed()?;
        let mut p = path.to_string();
        loop {
            if let Some(s) = parsed.source.span(&p) {
                return Some(s.whole);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Emits a diagnostic located at a config field path (empty: the file itself).
    pub fn emit(
        &mut self,
        rule: rules::Rule,
        sev: Severity,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = if path.is_empty() { None } else { self.at(path) };
        let d = Diagnostic::new(rule, sev, message)
            .model(&self.model.name)
            .file(&self.model.config_file)
            .span(span);
        self.out.push(d);
        self.out.last_mut().expect("just pushed")
    }

    pub fn error(
        &mut self,
        rule: rules::Rule,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.emit(rule, Severity::Error, path, message)
    }

    pub fn warn(
        &mut self,
        rule: rules::Rule,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.emit(rule, Severity::Warning, path, message)
    }

    /// Emits a diagnostic about a file or directory of the model (no place in the config).
    pub fn emit_path(
        &mut self,
        rule: rules::Rule,
        sev: Severity,
        file: &Path,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let d = Diagnostic::new(rule, sev, message)
            .model(&self.model.name)
            .file(file);
        self.out.push(d);
        self.out.last_mut().expect("just pushed")
    }
}

/// Platforms Triton knows and the backend each implies.
pub const PLATFORMS: &[(&str, &str)] = &[
    ("tensorrt_plan", "tensorrt"),
    ("tensorflow_graphdef", "tensorflow"),
    ("tensorflow_savedmodel", "tensorflow"),
    ("onnxruntime_onnx", "onnxruntime"),
    ("pytorch_libtorch", "pytorch"),
    ("torch_aoti", "pytorch"),
    ("ensemble", ""),
];

/// Resolves backend and platform the way Triton's autofill does (`model_config_utils.cc`).
pub fn resolve(m: &ModelDir, cfg: &ModelConfig) -> Resolved {
    let mut backend = cfg.backend.clone();
    let mut platform = cfg.platform.clone();
    if platform == "ensemble" {
        return Resolved {
            backend,
            platform,
            is_ensemble: true,
        };
    }
    if backend.is_empty()
        && let Some((_, b)) = PLATFORMS.iter().find(|(p, _)| *p == platform)
    {
        backend = b.to_string();
    }
    if backend.is_empty() && platform.is_empty() {
        if let Some((b, p)) = autofill_from_files(m, &cfg.default_model_filename) {
            backend = b.to_string();
            platform = p.to_string();
        } else if let Some((_, suffix)) = m.name.rsplit_once('.') {
            backend = suffix.to_string();
        }
    }
    if platform.is_empty() {
        platform = match backend.as_str() {
            "tensorrt" => "tensorrt_plan",
            "onnxruntime" => "onnxruntime_onnx",
            "pytorch" => "pytorch_libtorch",
            _ => "",
        }
        .to_string();
    }
    Resolved {
        backend,
        platform,
        is_ensemble: false,
    }
}

/// The backend Triton's autofill detects from the first subdirectory's files.
fn autofill_from_files(
    m: &ModelDir,
    default_filename: &str,
) -> Option<(&'static str, &'static str)> {
    let first = m.entries.iter().find(|e| e.is_dir)?;
    let dir = m.dir.join(&first.name);
    let has = |f: &str| dir.join(f).exists();
    let named = |f: &str| {
        !default_filename.is_empty() && default_filename.ends_with(f) && has(default_filename)
    };
    if dir.join("model.savedmodel").is_dir() {
        return Some(("tensorflow", "tensorflow_savedmodel"));
    }
    if dir.join("model.graphdef").is_file() {
        return Some(("tensorflow", "tensorflow_graphdef"));
    }
    if has("model.plan") || named(".plan") {
        return Some(("tensorrt", "tensorrt_plan"));
    }
    if has("model.onnx") || named(".onnx") {
        return Some(("onnxruntime", "onnxruntime_onnx"));
    }
    if has("model.xml") || named(".xml") {
        return Some(("openvino", ""));
    }
    if has("model.pt") || named(".pt") {
        return Some(("pytorch", "pytorch_libtorch"));
    }
    if has("model.pt2") || named(".pt2") {
        return Some(("pytorch", "torch_aoti"));
    }
    if has("model.py") || named(".py") {
        return Some(("python", ""));
    }
    None
}
