//! The push pipeline: validate the repository, build one layer per model, make the target ECR
//! repository and its credentials ready, resolve the base image, write the config and manifest,
//! then upload what the registry lacks and put the manifest last (or build through the Docker
//! Engine with `Builder::Docker`, or write an OCI layout / docker archive).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use triton_deploy_aws::{AwsOptions, Secret, ecr};
use url::Url;

use super::docker;
use super::image::{self, ImageName, ImageSettings};
use super::layers::{self, Cache, Compression, Layer};
use super::registry::{Registry, RegistryError};
use crate::output::Progress;
use crate::triton::model_repo::ModelRepo;
use crate::validate::{self, Options};

/// What `push` is asked to do (from its flags).
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub repo: PathBuf,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub base: String,
    pub builder: Builder,
    pub compression: Compression,
    pub registry_endpoint: Option<Url>,
    pub insecure_registry: bool,
    pub output: Option<String>,
    pub skip_validate: bool,
    pub triton_args: Vec<String>,
    pub base_credentials_env: Option<String>,
    pub keep_images: u32,
    pub mutable_tags: bool,
    pub kms_key: Option<String>,
    pub jobs: usize,
    /// Where and as whom to call AWS.
    pub aws: AwsOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Builder {
    Oci,
    Docker,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Usage(String),
    #[error("the model repository is invalid ({} errors); fix it or pass --skip-validate", .0.errors())]
    Invalid(Box<validate::Report>),
    #[error(transparent)]
    Validate(#[from] validate::ValidateError),
    #[error("building the layer of model '{model}': {source}")]
    Layer {
        model: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ecr(#[from] ecr::EcrError),
    #[error(transparent)]
    EcrApi(#[from] triton_deploy_aws::ApiError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Registry(#[from] crate::package::registry::RegistryError),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub model: String,
    pub digest: String,
    pub size: u64,
    /// How the layer is encoded (what `--compression auto` chose).
    pub compression: layers::Encoding,
    pub uploaded: bool,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub image: String,
    pub digest: String,
    pub tag: String,
    pub layers: Vec<LayerReport>,
    pub uploaded_bytes: u64,
    pub reused_bytes: u64,
    pub seconds: f64,
    pub base: BaseReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Settings of the existing ECR repository that differed from the ones asked for, and
    /// whether each was set back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repository_settings: Vec<ecr::SettingDrift>,
}

#[derive(Debug, Serialize)]
pub struct BaseReport {
    pub image: String,
    pub digest: String,
    pub layers: usize,
}

fn registry_url(host: &str) -> Result<Url, PushError> {
    let local =
        host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("[::1]");
    let scheme = if local { "http" } else { "https" };
    Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|e| PushError::Usage(format!("bad registry host '{host}': {e}")))
}

fn credentials_from_env(var: &str) -> Result<(String, Secret), PushError> {
    let v = std::env::var(var)
        .map_err(|_| PushError::Usage(format!("environment variable {var} is not set")))?;
    let (u, p) = v
        .split_once(':')
        .ok_or_else(|| PushError::Usage(format!("{var} must hold 'user:password'")))?;
    Ok((u.to_string(), Secret::new(p)))
}

/// The last commit that touched `dir` (`-dirty` when it has uncommitted changes), if in git.
/// Commits elsewhere in the repository do not change it, so they do not change the image.
fn git_revision(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let rev = git(&["log", "-1", "--format=%H", "--", "."]).filter(|r| !r.is_empty())?;
    let dirty = git(&["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// `--builder docker`: render the Dockerfile, build and push through the engine.
async fn docker_push(
    s: &PushSettings,
    progress: &Progress,
    repo: &ModelRepo,
    model_layers: &[Layer],
    report: &validate::Report,
    reg: &Registry,
    repository: &ecr::Repository,
) -> Result<PushReport, PushError> {
    use super::docker::ModelSource;
    let engine = docker::connect()
        .await
        .map_err(|e| PushError::Other(e.to_string()))?;
    let models: Vec<ModelSource> = repo
        .models
        .iter()
        .filter(|m| !m.name.starts_with('.'))
        .map(|m| ModelSource {
            name: m.name.clone(),
            dir: m.dir.clone(),
        })
        .collect();
    let mut labels = BTreeMap::new();
    labels.insert("ai.triton-deploy.models".to_string(), served_label(report));
    labels.insert(
        "ai.triton-deploy.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    labels.insert(
        "org.opencontainers.image.base.name".to_string(),
        s.base.clone(),
    );
    let mut cmd = vec![
        "tritonserver".to_string(),
        "--model-repository=/models".to_string(),
    ];
    cmd.extend(s.triton_args.iter().cloned());
    let dockerfile = docker::render(&s.base, &models, &cmd, &labels);
    let tag = s.tag.clone().unwrap_or_else(|| {
        let mut id = dockerfile.clone();
        for l in model_layers {
            id.push_str(&l.diff_id);
        }
        format!(
            "docker-{}",
            &crate::package::registry::sha256_digest(id.as_bytes())[7..19]
        )
    });
    let host = reg.host();
    let name = format!("{host}/{}", repository.name);
    // The engine's build and push output, streamed to stderr (JSON mode keeps it in the log).
    let log = |line: &str| {
        if progress.is_shown() {
            progress.line(format!("  docker: {line}"));
        } else {
            tracing::info!(target: "triton_deploy::docker", "{line}");
        }
    };
    docker::build(
        &engine,
        &dockerfile,
        &models,
        &format!("{name}:{tag}"),
        &log,
    )
    .await
    .map_err(|e| PushError::Other(e.to_string()))?;
    let auth = reg
        .credentials()
        .ok_or_else(|| PushError::Other("no registry credentials".into()))?;
    let digest = docker::push(&engine, &name, &tag, &host, (&auth.0, &auth.1), &log)
        .await
        .map_err(|e| PushError::Other(e.to_string()))?;
    Ok(PushReport {
        image: format!("{}@{digest}", repository.uri),
        digest,
        tag,
        layers: Vec::new(),
        uploaded_bytes: 0,
        reused_bytes: 0,
        seconds: 0.0,
        base: BaseReport {
            image: s.base.clone(),
            digest: String::new(),
            layers: 0,
        },
        output: None,
        repository_settings: repository.drift.clone(),
    })
}

fn served_label(report: &validate::Report) -> String {
    report
        .models
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                m.name,
                m.versions
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[derive(Debug, Clone, Copy)]
enum OutputKind {
    OciLayout,
    DockerArchive,
}

fn parse_output(o: &str) -> Result<(OutputKind, PathBuf), PushError> {
    let (kind, path) = o
        .split_once(':')
        .filter(|(_, p)| !p.is_empty())
        .ok_or_else(|| {
            PushError::Usage(format!(
                "--output '{o}': expected oci-layout:DIR or docker-archive:FILE"
            ))
        })?;
    let kind = match kind {
        "oci-layout" => OutputKind::OciLayout,
        "docker-archive" => OutputKind::DockerArchive,
        _ => {
            return Err(PushError::Usage(format!(
                "--output kind '{kind}': expected oci-layout or docker-archive"
            )));
        }
    };
    Ok((kind, PathBuf::from(path)))
}

/// Options that cannot go together, and a repository that is not there.
fn check_settings(s: &PushSettings) -> Result<(), PushError> {
    if s.builder == Builder::Docker && (s.repository.is_none() || s.output.is_some()) {
        return Err(PushError::Usage(
            "--builder docker pushes through the Docker Engine: it needs --repository and cannot write --output".into(),
        ));
    }
    if !s.repo.is_dir() {
        return Err(PushError::Usage(format!(
            "model repository {} is not a directory",
            s.repo.display()
        )));
    }
    Ok(())
}

/// Where uncompressed layers may be streamed while they are built.
struct Streaming<'a> {
    registry: &'a Registry,
    repo: &'a str,
}

/// Uncompressed layers under this size are hashed first and sent afterwards: streaming them
/// while they are hashed saves too little to pay for the extra request.
const STREAM_MIN: u64 = 64 << 20;

/// The blobs streamed while their layers were built: what the registry said of each, or the
/// error that has them sent again afterwards.
type Streamed = tokio::task::JoinSet<(String, u64, Result<(String, bool), RegistryError>)>;

/// ECR refuses layers over 52,000 MiB.
const ECR_MAX_LAYER: u64 = 52_000 << 20;

fn too_large(model: &str, size: u64) -> PushError {
    PushError::Usage(format!(
        "the layer of model '{model}' is {} MiB, over ECR's limit of 52,000 MiB per layer; split its weights across models or store them on EFS",
        size >> 20
    ))
}

/// A model's layer, listed and planned but not built.
struct Planned {
    model: String,
    prepared: layers::Prepared,
    /// The blob's size when it is known before building (an uncompressed layer's).
    uncompressed_size: Option<u64>,
}

/// Lists every model, looks its layer up in the cache and plans the others; an uncompressed
/// layer over ECR's limit is refused here, before anything is created or sent.
async fn plan_layers(s: &PushSettings, repo: &ModelRepo) -> Result<Vec<Planned>, PushError> {
    let cache = Cache::default_location();
    let mut planned = Vec::new();
    for m in repo.models.iter().filter(|m| !m.name.starts_with('.')) {
        let layer_error = |source: std::io::Error| PushError::Layer {
            model: m.name.clone(),
            source,
        };
        let (c, name, dir, comp) = (cache.clone(), m.name.clone(), m.dir.clone(), s.compression);
        let (prepared, uncompressed_size) = tokio::task::spawn_blocking(move || {
            let p = layers::prepare(&c, &name, &dir, comp)?;
            let size = p.uncompressed_size()?;
            Ok::<_, std::io::Error>((p, size))
        })
        .await
        .map_err(|e| PushError::Other(e.to_string()))?
        .map_err(layer_error)?;
        if let Some(size) = uncompressed_size.filter(|&n| n > ECR_MAX_LAYER) {
            return Err(too_large(&m.name, size));
        }
        planned.push(Planned {
            model: m.name.clone(),
            prepared,
            uncompressed_size,
        });
    }
    if planned.is_empty() {
        return Err(PushError::Usage(format!(
            "{} holds no models",
            s.repo.display()
        )));
    }
    Ok(planned)
}

/// Builds the planned layers (one per model, cached between runs), each within ECR's size limit.
/// With `streaming`, a large uncompressed layer that is not cached is uploaded while it is
/// hashed (its tar is read twice, the second time mostly from the page cache); those uploads are
/// returned unfinished.
async fn build_layers(
    s: &PushSettings,
    planned: Vec<Planned>,
    streaming: Option<Streaming<'_>>,
    progress: &Arc<Progress>,
) -> Result<(Vec<Layer>, Streamed), PushError> {
    let cache = Cache::default_location();
    let mut model_layers: Vec<Layer> = Vec::new();
    let mut streamed = Streamed::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(s.jobs.max(1)));
    for Planned {
        model,
        prepared,
        uncompressed_size,
    } in planned
    {
        let digest_to = match (&streaming, uncompressed_size) {
            (Some(t), Some(size)) if size >= STREAM_MIN => {
                let (tx, rx) = tokio::sync::oneshot::channel::<String>();
                let (registry, repo) = (t.registry.clone(), t.repo.to_string());
                let (model, source) = (model.clone(), prepared.tar_stream(size));
                let (progress, permits) = (progress.clone(), permits.clone());
                streamed.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let key = format!("stream:{model}");
                    progress.bar_start(&key, &model, "streaming", size);
                    let advance = |n: u64| progress.bar_advance(&key, n);
                    let r = registry
                        .upload_unhashed(&repo, size, source, async { rx.await.ok() }, &advance)
                        .await;
                    let how = match &r {
                        Ok((_, true)) => "uploaded",
                        Ok((_, false)) => "exists",
                        Err(_) => "failed, sent again",
                    };
                    progress.bar_finish(&key, how);
                    (model, size, r)
                });
                Some(tx)
            }
            _ => None,
        };
        let c = cache.clone();
        let layer = tokio::task::spawn_blocking(move || prepared.build(&c))
            .await
            .map_err(|e| PushError::Other(e.to_string()))?
            .map_err(|source| PushError::Layer {
                model: model.clone(),
                source,
            })?;
        if let Some(tx) = digest_to {
            let _ = tx.send(layer.digest.clone());
        }
        tracing::info!(model = %model, digest = %layer.digest, cached = layer.cached, "layer ready");
        if layer.size > ECR_MAX_LAYER {
            return Err(too_large(&layer.model, layer.size));
        }
        model_layers.push(layer);
    }
    Ok((model_layers, streamed))
}

/// Waits for the blobs streamed while the layers were built. A stream that failed is left for
/// the push to send again (with retries).
async fn streamed_blobs(mut streamed: Streamed) -> Result<Vec<image::BlobOutcome>, PushError> {
    let mut out = Vec::new();
    while let Some(joined) = streamed.join_next().await {
        let (model, size, r) = joined.map_err(|e| PushError::Other(e.to_string()))?;
        match r {
            Ok((digest, sent)) => out.push(image::BlobOutcome {
                digest,
                size,
                uploaded: sent,
                how: if sent { "uploaded" } else { "exists" },
            }),
            Err(e) => {
                tracing::warn!(model = %model, error = %e, "streaming the layer failed; it is sent again");
            }
        }
    }
    Ok(out)
}

/// The ECR repository (created if missing) and its registry, logged in; with
/// `--registry-endpoint`, also the ECR API to tell of the image.
async fn target_registry(s: &PushSettings) -> Result<Option<Target>, PushError> {
    let mut target: Option<(Registry, ecr::Repository)> = None;
    // With --registry-endpoint the registry is not ECR's own (a stand-in or a proxy): the ECR API
    // then learns of the image from us, as ECR's registry would tell it.
    let mut control_plane: Option<ecr::Ecr> = None;
    if let Some(name) = &s.repository {
        ecr::check_repository_name(name).map_err(|e| PushError::Usage(e.to_string()))?;
        let cfg = triton_deploy_aws::load_config(&s.aws).await;
        let client = ecr::Ecr::new(&cfg);
        let settings = ecr::RepositorySettings {
            immutable_tags: !s.mutable_tags,
            kms_key: s.kms_key.clone(),
            keep_images: s.keep_images,
            ..Default::default()
        };
        let repository = client.ensure_repository(name, &settings).await?;
        let auth = client.registry_auth(&repository.registry_id).await?;
        let endpoint = match &s.registry_endpoint {
            Some(u) => u.clone(),
            None => {
                let host = repository.uri.split('/').next().unwrap_or_default();
                Url::parse(&format!("https://{host}/")).map_err(|e| {
                    PushError::Other(format!("bad repository URI {}: {e}", repository.uri))
                })?
            }
        };
        let reg = Registry::new(
            endpoint,
            Some((auth.username, auth.password)),
            s.insecure_registry,
        )?;
        reg.ping().await?;
        if s.registry_endpoint.is_some() {
            control_plane = Some(client);
        }
        target = Some((reg, repository));
    }

    Ok(target.map(|(registry, repository)| Target {
        registry,
        repository,
        control_plane,
    }))
}

/// The base image's registry: the target one when the base lives there, else its own.
fn base_registry(
    s: &PushSettings,
    target: Option<&Target>,
    base_name: &ImageName,
) -> Result<Registry, PushError> {
    Ok(match target {
        Some(t) if t.registry.host() == base_name.registry => t.registry.clone(),
        _ => {
            let creds = s
                .base_credentials_env
                .as_deref()
                .map(credentials_from_env)
                .transpose()?;
            Registry::new(
                registry_url(&base_name.registry)?,
                creds,
                s.insecure_registry,
            )?
        }
    })
}

/// The image's labels: the models it serves, our version, its base, the repository's revision.
fn image_labels(
    s: &PushSettings,
    report: &validate::Report,
    base_name: &ImageName,
    base_digest: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("ai.triton-deploy.models".to_string(), served_label(report));
    labels.insert(
        "ai.triton-deploy.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    labels.insert(
        "org.opencontainers.image.base.name".to_string(),
        base_name.to_string(),
    );
    labels.insert(
        "org.opencontainers.image.base.digest".to_string(),
        base_digest.to_string(),
    );
    if let Some(rev) = git_revision(&s.repo) {
        labels.insert("org.opencontainers.image.revision".to_string(), rev);
    }
    labels
}

/// A tag the registry takes.
fn check_tag(tag: &str) -> Result<(), PushError> {
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        || tag.starts_with(['.', '-'])
    {
        return Err(PushError::Usage(format!(
            "'{tag}' is not a valid tag: up to 128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
        )));
    }

    Ok(())
}

/// The image written to a local OCI layout or Docker archive.
async fn write_output(
    s: &PushSettings,
    output_to: &(OutputKind, PathBuf),
    target: Option<&Target>,
    built: &image::BuiltImage,
    base_reg: &Registry,
    tag: &str,
) -> Result<(), PushError> {
    let (kind, path) = output_to;
    let ref_name = match target {
        Some(t) => format!("{}:{tag}", t.repository.uri),
        None => format!(
            "{}:{tag}",
            s.repo
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "models".into())
        ),
    };
    match kind {
        OutputKind::OciLayout => image::write_oci_layout(built, base_reg, path, tag).await?,
        OutputKind::DockerArchive => {
            image::write_docker_archive(built, base_reg, path, &ref_name).await?
        }
    }
    Ok(())
}

/// The ECR repository pushed to, its registry, and (with `--registry-endpoint`) the ECR API
/// to tell of the image.
struct Target {
    registry: Registry,
    repository: ecr::Repository,
    control_plane: Option<ecr::Ecr>,
}

/// What an upload sent and what the registry already had.
struct Uploaded {
    image: String,
    layers: Vec<LayerReport>,
    uploaded_bytes: u64,
    reused_bytes: u64,
}

/// The image pushed to the target (when there is one), per layer whether it was sent.
async fn upload(
    s: &PushSettings,
    progress: &Arc<Progress>,
    built: &image::BuiltImage,
    target: Option<&Target>,
    base_reg: &Registry,
    tag: &str,
    sent: &[image::BlobOutcome],
) -> Result<Uploaded, PushError> {
    let mut layer_reports: Vec<LayerReport> = built
        .model_layers
        .iter()
        .map(|l| LayerReport {
            model: l.model.clone(),
            digest: l.digest.clone(),
            size: l.size,
            compression: l.compression,
            uploaded: false,
        })
        .collect();
    let (mut uploaded_bytes, mut reused_bytes) = (0, 0);
    let image_ref = match target {
        Some(Target {
            registry: reg,
            repository,
            control_plane,
        }) => {
            let progress: Arc<dyn image::Progress> = progress.clone();
            let scratch = tempfile::tempdir().map_err(|e| PushError::Other(e.to_string()))?;
            let dest = image::Destination {
                registry: reg,
                repo: &repository.name,
                tag,
                immutable: repository.immutable_tags,
            };
            let outcome = image::push(
                built,
                &dest,
                base_reg,
                s.jobs,
                progress,
                scratch.path(),
                sent,
            )
            .await?;
            for b in &outcome.blobs {
                if b.uploaded {
                    uploaded_bytes += b.size;
                } else {
                    reused_bytes += b.size;
                }
                for l in layer_reports.iter_mut().filter(|l| l.digest == b.digest) {
                    l.uploaded = b.uploaded;
                }
            }
            if let Some(c) = control_plane {
                c.put_image(
                    &repository.name,
                    tag,
                    &String::from_utf8_lossy(&built.manifest_bytes),
                    &built.manifest_media_type,
                )
                .await?;
            }
            format!("{}@{}", repository.uri, built.digest)
        }
        None => format!("{}@{}", s.repo.display(), built.digest),
    };
    Ok(Uploaded {
        image: image_ref,
        layers: layer_reports,
        uploaded_bytes,
        reused_bytes,
    })
}

/// Validates, layers, packages and pushes (or writes) the model repository of `s`.
pub async fn push(s: &PushSettings, progress: Arc<Progress>) -> Result<PushReport, PushError> {
    check_settings(s)?;
    let output_to = s.output.as_deref().map(parse_output).transpose()?;
    // 1. Validate.
    let report = validate::validate(std::slice::from_ref(&s.repo), &Options::default())?;
    if !report.is_valid(false) {
        if !s.skip_validate {
            return Err(PushError::Invalid(Box::new(report)));
        }
        tracing::warn!(
            errors = report.errors(),
            "pushing an invalid repository (--skip-validate)"
        );
    }
    // 2. Layers planned (listed, cached ones found, the others' encoding chosen).
    let repo = ModelRepo::read(&s.repo, None)
        .map_err(|e| PushError::Other(format!("reading {}: {e}", s.repo.display())))?;
    let planned = plan_layers(s, &repo).await?;
    let base_name = ImageName::parse(&s.base)?;
    // 3. Target registry (ECR), unless only writing locally.
    let target = target_registry(s).await?;
    // 4. Layers built, one per model; large uncompressed ones streamed to the target as they are
    //    hashed, unless the tag is taken (then nothing is sent before the tag is checked).
    let streaming = match &target {
        Some(t) if s.builder == Builder::Oci => {
            let free = match &s.tag {
                // A tag named from the image's digest names this image if it exists.
                None => true,
                Some(tag) => t
                    .registry
                    .manifest_digest(&t.repository.name, tag)
                    .await?
                    .is_none(),
            };
            free.then(|| Streaming {
                registry: &t.registry,
                repo: &t.repository.name,
            })
        }
        _ => None,
    };
    let (model_layers, streamed) = build_layers(s, planned, streaming, &progress).await?;
    if s.builder == Builder::Docker {
        let t = target
            .as_ref()
            .expect("checked: --builder docker needs --repository");
        let (reg, repository) = (&t.registry, &t.repository);
        return docker_push(s, &progress, &repo, &model_layers, &report, reg, repository).await;
    }
    // 5. Base image.
    let base_reg = base_registry(s, target.as_ref(), &base_name)?;
    let base = image::resolve_base(&base_reg, &base_name).await?;
    // 6. Config and manifest.
    let labels = image_labels(s, &report, &base_name, &base.digest);
    let built = image::build(
        &base,
        &model_layers,
        &ImageSettings {
            triton_args: s.triton_args.clone(),
            labels,
        },
    );
    let tag = s
        .tag
        .clone()
        .unwrap_or_else(|| format!("sha-{}", &built.digest[7..19]));
    check_tag(&tag)?;
    // 7. Local output.
    if let Some(o) = &output_to {
        write_output(s, o, target.as_ref(), &built, &base_reg, &tag).await?;
    }
    // 8. Push.
    let sent = streamed_blobs(streamed).await?;
    let up = upload(
        s,
        &progress,
        &built,
        target.as_ref(),
        &base_reg,
        &tag,
        &sent,
    )
    .await?;
    Ok(PushReport {
        image: up.image,
        digest: built.digest.clone(),
        tag,
        layers: up.layers,
        uploaded_bytes: up.uploaded_bytes,
        reused_bytes: up.reused_bytes,
        seconds: 0.0,
        base: BaseReport {
            image: base_name.to_string(),
            digest: base.digest.clone(),
            layers: base.layers.len(),
        },
        output: s.output.clone(),
        repository_settings: target
            .as_ref()
            .map(|t| t.repository.drift.clone())
            .unwrap_or_default(),
    })
}
