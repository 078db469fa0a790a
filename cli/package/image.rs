//! Layers → image: resolve the `tritonserver` base image, append one layer per model, write the image
//! config and manifest, and push the blobs and the manifest (or write an OCI layout / docker archive).
//! The manifest is pushed last, so a tag never points at a half-pushed image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::package::layers::Layer;
use crate::package::registry::{Registry, RegistryError, sha256_digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The base image when none is given: NVIDIA's Triton release image (documented in the README).
pub const DEFAULT_BASE: &str = "nvcr.io/nvidia/tritonserver:25.10-py3";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference '{0}': {1}")]
    BadReference(String, String),
    #[error("base image {image}: {source}")]
    Base {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("base image {0} has no linux/amd64 manifest")]
    NoPlatform(String),
    #[error("base image {image}: {detail}")]
    BadBase { image: String, detail: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "tag '{tag}' already points at {existing} in an immutable repository; this build is {ours}. Push with another --tag"
    )]
    TagTaken {
        tag: String,
        existing: String,
        ours: String,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `registry/repository:tag` or `registry/repository@sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Host (and port) of the registry; `registry-1.docker.io` for Docker Hub names.
    pub registry: String,
    pub repository: String,
    pub reference: String,
}

impl ImageName {
    /// `reference` with its registry host replaced by `endpoint`'s (a stand-in or a proxy of the
    /// registry, `--registry-endpoint`).
    pub fn through_endpoint(reference: &str, endpoint: &url::Url) -> Result<String, String> {
        let name = ImageName::parse(reference).map_err(|e| format!("--image {reference}: {e}"))?;
        let host = endpoint
            .host_str()
            .ok_or_else(|| format!("--registry-endpoint {endpoint}: no host"))?;
        let host = match endpoint.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let sep = if name.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        Ok(format!("{host}/{}{sep}{}", name.repository, name.reference))
    }

    pub fn parse(s: &str) -> Result<ImageName, ImageError> {
        let bad = |why: &str| ImageError::BadReference(s.to_string(), why.to_string());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad("empty or contains spaces"));
        }
        let (rest, reference) = if let Some((r, d)) = s.split_once('@') {
            (r, d.to_string())
        } else {
            match s.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_string()),
                _ => (s, "latest".to_string()),
            }
        };
        let (registry, repository) = match rest.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), r.to_string())
            }
            _ => {
                let repo = if rest.contains('/') {
                    rest.to_string()
                } else {
                    format!("library/{rest}")
                };
                ("registry-1.docker.io".to_string(), repo)
            }
        };
        if repository.is_empty() || reference.is_empty() {
            return Err(bad("missing repository or tag"));
        }
        Ok(ImageName {
            registry,
            repository,
            reference,
        })
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// A content descriptor in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

fn descriptor(v: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: v.get("mediaType")?.as_str()?.to_string(),
        digest: v.get("digest")?.as_str()?.to_string(),
        size: v.get("size")?.as_u64()?,
    })
}

/// The resolved base image (one platform).
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub name: ImageName,
    /// Digest of the platform manifest.
    pub digest: String,
    /// Whether its manifest is Docker v2.2 (else OCI).
    pub docker: bool,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

/// Resolves `name` on `reg` to its linux/amd64 manifest and config.
pub async fn resolve_base(reg: &Registry, name: &ImageName) -> Result<BaseImage, ImageError> {
    let wrap = |e| ImageError::Base {
        image: name.to_string(),
        source: e,
    };
    let (bytes, media, digest) = reg
        .get_manifest(&name.repository, &name.reference)
        .await
        .map_err(wrap)?;
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| ImageError::BadBase {
        image: name.to_string(),
        detail: format!("manifest is not JSON: {e}"),
    })?;
    let media = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or(media);
    let mut digest = digest;
    let mut media = media;
    if media == OCI_INDEX || media == DOCKER_LIST || doc.get("manifests").is_some() {
        let pick = doc["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| ImageError::NoPlatform(name.to_string()))?
            .to_string();
        let (b, m, d) = reg
            .get_manifest(&name.repository, &pick)
            .await
            .map_err(wrap)?;
        doc = serde_json::from_slice(&b).map_err(|e| ImageError::BadBase {
            image: name.to_string(),
            detail: format!("platform manifest is not JSON: {e}"),
        })?;
        media = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(m);
        digest = d;
    }
    let docker = media == DOCKER_MANIFEST;
    let config_desc = descriptor(&doc["config"]).ok_or_else(|| ImageError::BadBase {
        image: name.to_string(),
        detail: "manifest has no config descriptor".into(),
    })?;
    let layers = doc["layers"]
        .as_array()
        .ok_or_else(|| ImageError::BadBase {
            image: name.to_string(),
            detail: "manifest has no layers".into(),
        })?
        .iter()
        .map(|l| {
            descriptor(l).ok_or_else(|| ImageError::BadBase {
                image: name.to_string(),
                detail: "a layer descriptor is malformed".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config_bytes = reg
        .get_blob(&name.repository, &config_desc.digest)
        .await
        .map_err(wrap)?;
    let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadBase {
        image: name.to_string(),
        detail: format!("config is not JSON: {e}"),
    })?;
    // The fields `build` edits must be objects (or absent/null): refuse anything else up front.
    let objectish =
        |v: Option<&Value>| matches!(v, None | Some(Value::Null) | Some(Value::Object(_)));
    let inner = config.get("config");
    if !config.is_object()
        || !objectish(inner)
        || !objectish(inner.and_then(|c| c.get("ExposedPorts")))
        || !objectish(inner.and_then(|c| c.get("Labels")))
    {
        return Err(ImageError::BadBase {
            image: name.to_string(),
            detail: "the image config's config, ExposedPorts or Labels is not an object".into(),
        });
    }
    if config["rootfs"]["diff_ids"].as_array().map(Vec::len) != Some(layers.len()) {
        return Err(ImageError::BadBase {
            image: name.to_string(),
            detail: "the config's diff_ids do not match the manifest's layers".into(),
        });
    }
    Ok(BaseImage {
        name: name.clone(),
        digest,
        docker,
        config,
        layers,
    })
}

/// What goes into the image config besides the layers.
#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// Extra `tritonserver` flags after `--model-repository=/models`.
    pub triton_args: Vec<String>,
    /// Labels added to the base's.
    pub labels: BTreeMap<String, String>,
}

/// A fully described image, ready to push or write out.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub base: BaseImage,
    pub model_layers: Vec<Layer>,
    pub config_bytes: Vec<u8>,
    pub config_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub manifest_media_type: String,
    pub digest: String,
}

impl BuiltImage {
    /// Every blob of the image, base layers first.
    pub fn layer_descriptors(&self) -> Vec<Descriptor> {
        let v: Value = serde_json::from_slice(&self.manifest_bytes).expect("our manifest is JSON");
        v["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter_map(descriptor)
            .collect()
    }
}

fn oci_layer_type(media: &str) -> String {
    match media {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".into()
        }
        other => other.to_string(),
    }
}

/// Builds the config and manifest of `base` plus `layers` (one per model).
pub fn build(base: &BaseImage, layers: &[Layer], settings: &ImageSettings) -> BuiltImage {
    let mut config = base.config.clone();
    let c = config
        .as_object_mut()
        .expect("image config is an object")
        .entry("config")
        .or_insert_with(|| json!({}));
    if c.is_null() {
        *c = json!({});
    }
    let mut cmd = vec![
        "tritonserver".to_string(),
        "--model-repository=/models".to_string(),
    ];
    cmd.extend(settings.triton_args.iter().cloned());
    c["Cmd"] = json!(cmd);
    let ports = c
        .as_object_mut()
        .expect("config.config is an object")
        .entry("ExposedPorts")
        .or_insert_with(|| json!({}));
    if ports.is_null() {
        *ports = json!({});
    }
    for p in ["8000/tcp", "8001/tcp", "8002/tcp"] {
        ports[p] = json!({});
    }
    let labels = c
        .as_object_mut()
        .expect("object")
        .entry("Labels")
        .or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    for (k, v) in &settings.labels {
        labels[k] = json!(v);
    }
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("checked in resolve_base");
    for l in layers {
        diff_ids.push(json!(l.diff_id));
    }
    if let Some(h) = config.get_mut("history").and_then(Value::as_array_mut) {
        for l in layers {
            h.push(json!({"created_by": format!("triton-deploy: model {} ({} files)", l.model, l.files), "comment": "triton-deploy"}));
        }
    }
    // serde_json's map is ordered by key: the same inputs always give the same bytes.
    let config_bytes = serde_json::to_vec(&config).expect("serializable");
    let config_digest = sha256_digest(&config_bytes);
    let compression_docker = layers
        .iter()
        .all(|l| l.compression.docker_media_type().is_some());
    let docker = base.docker && compression_docker;
    let (manifest_media, config_media) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let mut all_layers: Vec<Descriptor> = base
        .layers
        .iter()
        .map(|d| Descriptor {
            media_type: if docker {
                d.media_type.clone()
            } else {
                oci_layer_type(&d.media_type)
            },
            ..d.clone()
        })
        .collect();
    for l in layers {
        all_layers.push(Descriptor {
            media_type: if docker {
                l.compression
                    .docker_media_type()
                    .expect("checked")
                    .to_string()
            } else {
                l.compression.oci_media_type().to_string()
            },
            digest: l.digest.clone(),
            size: l.size,
        });
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_media,
        "config": {"mediaType": config_media, "digest": config_digest, "size": config_bytes.len()},
        "layers": all_layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("serializable");
    let digest = sha256_digest(&manifest_bytes);
    BuiltImage {
        base: base.clone(),
        model_layers: layers.to_vec(),
        config_bytes,
        config_digest,
        manifest_bytes,
        manifest_media_type: manifest_media.to_string(),
        digest,
    }
}

/// What happened to one blob during a push.
#[derive(Debug, Clone, Serialize)]
pub struct BlobOutcome {
    pub digest: String,
    pub size: u64,
    /// Bytes sent: 0 when the registry already had it or mounted it.
    pub uploaded: bool,
    pub how: &'static str,
}

#[derive(Debug, Clone)]
pub struct PushOutcome {
    pub blobs: Vec<BlobOutcome>,
}

/// Progress callbacks for a push: `start(digest, size)` then `advance(digest, bytes)`.
pub trait Progress: Send + Sync {
    fn start(&self, _label: &str, _digest: &str, _size: u64) {}
    fn advance(&self, _digest: &str, _bytes: u64) {}
    fn finish(&self, _digest: &str, _how: &str) {}
}

enum Source<'a> {
    File(&'a Path),
    Layer(&'a Layer),
    Base,
}

/// Where a push goes.
pub struct Destination<'a> {
    pub registry: &'a Registry,
    pub repo: &'a str,
    pub tag: &'a str,
    /// The repository's tags are immutable: never move an existing tag.
    pub immutable: bool,
}

/// Pushes `image` to `dest`, copying base layers from `base_reg`; `concurrency` bounds
/// simultaneous blob transfers; `scratch` holds the config blob while it uploads. Blobs in `sent`
/// are already in the destination (streamed there while their layers were built): they are
/// neither asked about nor sent again.
pub async fn push(
    image: &BuiltImage,
    dest: &Destination<'_>,
    base_reg: &Registry,
    concurrency: usize,
    progress: Arc<dyn Progress>,
    scratch: &Path,
    sent: &[BlobOutcome],
) -> Result<PushOutcome, ImageError> {
    let (target, repo, tag, immutable) = (dest.registry, dest.repo, dest.tag, dest.immutable);
    // Refuse before sending anything when an immutable tag already names another image.
    let existing = target.manifest_digest(repo, tag).await?;
    if let Some(d) = &existing {
        if *d == image.digest {
            // Nothing to do, but make sure every blob is there (HEADs only).
        } else if immutable {
            return Err(ImageError::TagTaken {
                tag: tag.into(),
                existing: d.clone(),
                ours: image.digest.clone(),
            });
        }
    }
    let config_path = scratch.join(image.config_digest.trim_start_matches("sha256:"));
    std::fs::write(&config_path, &image.config_bytes).map_err(|e| ImageError::Io {
        path: config_path.clone(),
        source: e,
    })?;

    let mut jobs: Vec<(String, Descriptor, Source)> = Vec::new();
    for d in &image.base.layers {
        jobs.push(("base".into(), d.clone(), Source::Base));
    }
    for l in &image.model_layers {
        jobs.push((
            l.model.clone(),
            Descriptor {
                media_type: String::new(),
                digest: l.digest.clone(),
                size: l.size,
            },
            Source::Layer(l),
        ));
    }
    jobs.push((
        "config".into(),
        Descriptor {
            media_type: String::new(),
            digest: image.config_digest.clone(),
            size: image.config_bytes.len() as u64,
        },
        Source::File(&config_path),
    ));
    // The same blob can appear twice (two identical models): transfer it once; and not at all
    // when it was streamed already.
    let mut seen: std::collections::HashSet<String> =
        sent.iter().map(|b| b.digest.clone()).collect();
    jobs.retain(|(_, d, _)| seen.insert(d.digest.clone()));

    let same_registry = target.base == base_reg.base;
    let base_repo = image.base.name.repository.clone();
    let results = futures_util::stream::iter(jobs.into_iter().map(|(label, d, src)| {
        let progress = progress.clone();
        let base_repo = base_repo.clone();
        async move {
            progress.start(&label, &d.digest, d.size);
            if target.blob_exists(repo, &d.digest).await? {
                progress.finish(&d.digest, "exists");
                return Ok::<_, ImageError>(BlobOutcome {
                    digest: d.digest,
                    size: d.size,
                    uploaded: false,
                    how: "exists",
                });
            }
            let advance = |n: u64| progress.advance(&d.digest, n);
            let how = match src {
                Source::File(path) => {
                    target
                        .upload_file(repo, &d.digest, path, d.size, &advance)
                        .await?;
                    "uploaded"
                }
                Source::Layer(layer) => {
                    target
                        .upload_stream(repo, &d.digest, d.size, &|| layer.stream(), &advance)
                        .await?;
                    "uploaded"
                }
                Source::Base
                    if same_registry && target.mount_blob(repo, &d.digest, &base_repo).await? =>
                {
                    "mounted"
                }
                Source::Base => {
                    target
                        .copy_blob_from(base_reg, &base_repo, repo, &d.digest, d.size, &advance)
                        .await?;
                    "copied"
                }
            };
            progress.finish(&d.digest, how);
            Ok(BlobOutcome {
                digest: d.digest,
                size: d.size,
                uploaded: how != "mounted",
                how,
            })
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    let mut blobs = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    blobs.extend(sent.iter().cloned());

    // The tag may already point at this digest: then there is nothing to put.
    if existing.as_deref() != Some(image.digest.as_str()) {
        let got = target
            .put_manifest(repo, tag, &image.manifest_bytes, &image.manifest_media_type)
            .await?;
        if got != image.digest {
            return Err(ImageError::Registry(RegistryError::Integrity {
                digest: image.digest.clone(),
                detail: format!("the registry stored the manifest as {got}"),
            }));
        }
    }
    Ok(PushOutcome { blobs })
}

/// Writes `image` as an OCI image layout in `dir` (blobs, `index.json`, `oci-layout`), tagged `tag`.
pub async fn write_oci_layout(
    image: &BuiltImage,
    base_reg: &Registry,
    dir: &Path,
    tag: &str,
) -> Result<(), ImageError> {
    let blobs = dir.join("blobs/sha256");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| ImageError::Io { path, source: e }
    };
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    for d in &image.base.layers {
        let dest = blobs.join(d.digest.trim_start_matches("sha256:"));
        if !dest.exists() {
            base_reg
                .download_blob(&image.base.name.repository, &d.digest, &dest)
                .await?;
        }
    }
    for l in &image.model_layers {
        let dest = blobs.join(l.digest.trim_start_matches("sha256:"));
        std::fs::File::create(&dest)
            .map(std::io::BufWriter::new)
            .and_then(|mut f| {
                l.write_to(&mut f)?;
                std::io::Write::flush(&mut f)
            })
            .map_err(io(&dest))?;
    }
    for (digest, bytes) in [
        (&image.config_digest, &image.config_bytes),
        (&image.digest, &image.manifest_bytes),
    ] {
        let dest = blobs.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&dest, bytes).map_err(io(&dest))?;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": image.manifest_media_type,
            "digest": image.digest,
            "size": image.manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let p = dir.join("index.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&index).expect("json")).map_err(io(&p))?;
    let p = dir.join("oci-layout");
    std::fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&p))?;
    Ok(())
}

/// Writes `image` as a `docker load` archive (`manifest.json` + blobs) tagged `repo_tag`.
pub async fn write_docker_archive(
    image: &BuiltImage,
    base_reg: &Registry,
    file: &Path,
    repo_tag: &str,
) -> Result<(), ImageError> {
    let scratch = tempfile::tempdir_in(
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .map_err(|e| ImageError::Io {
        path: file.to_path_buf(),
        source: e,
    })?;
    write_oci_layout(image, base_reg, scratch.path(), repo_tag).await?;
    let name = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest = json!([{
        "Config": name(&image.config_digest),
        "RepoTags": [repo_tag],
        "Layers": image.layer_descriptors().iter().map(|d| name(&d.digest)).collect::<Vec<_>>(),
    }]);
    let io = |e| ImageError::Io {
        path: file.to_path_buf(),
        source: e,
    };
    let f = std::fs::File::create(file).map_err(io)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    b.mode(tar::HeaderMode::Deterministic);
    let mut files: Vec<PathBuf> = std::fs::read_dir(scratch.path().join("blobs/sha256"))
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for p in files {
        let rel = format!(
            "blobs/sha256/{}",
            p.file_name().expect("file").to_string_lossy()
        );
        b.append_path_with_name(&p, rel).map_err(io)?;
    }
    let bytes = serde_json::to_vec(&manifest).expect("json");
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, "manifest.json", &bytes[..])
        .map_err(io)?;
    b.into_inner().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_config_without_a_config_object_still_builds() {
        let base = BaseImage {
            name: ImageName::parse("example.com/base:1").unwrap(),
            digest: "sha256:00".into(),
            docker: false,
            config: json!({"config": null, "rootfs": {"type": "layers", "diff_ids": []}}),
            layers: Vec::new(),
        };
        let built = build(&base, &[], &ImageSettings::default());
        let cfg: Value = serde_json::from_slice(&built.config_bytes).unwrap();
        assert_eq!(
            cfg["config"]["Cmd"],
            json!(["tritonserver", "--model-repository=/models"])
        );
        assert!(cfg["config"]["ExposedPorts"]["8001/tcp"].is_object());
        let again = build(&base, &[], &ImageSettings::default());
        assert_eq!(again.digest, built.digest, "deterministic");
    }

    #[test]
    fn image_names_parse_like_docker() {
        let n = ImageName::parse("nvcr.io/nvidia/tritonserver:25.10-py3").unwrap();
        assert_eq!(
            (
                n.registry.as_str(),
                n.repository.as_str(),
                n.reference.as_str()
            ),
            ("nvcr.io", "nvidia/tritonserver", "25.10-py3")
        );
        let n = ImageName::parse("ubuntu").unwrap();
        assert_eq!(
            (
                n.registry.as_str(),
                n.repository.as_str(),
                n.reference.as_str()
            ),
            ("registry-1.docker.io", "library/ubuntu", "latest")
        );
        let n = ImageName::parse("127.0.0.1:5001/base/triton@sha256:abcd").unwrap();
        assert_eq!(
            (
                n.registry.as_str(),
                n.repository.as_str(),
                n.reference.as_str()
            ),
            ("127.0.0.1:5001", "base/triton", "sha256:abcd")
        );
        let n = ImageName::parse("localhost:5000/x").unwrap();
        assert_eq!(n.to_string(), "localhost:5000/x:latest");
        assert!(ImageName::parse("").is_err());
        assert!(ImageName::parse("a b").is_err());
    }
}
