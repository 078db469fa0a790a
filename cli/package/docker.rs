//! The Docker builder (`push --builder docker`): renders `templates/Dockerfile` for a model repository
//! (one COPY per model, `pip install` of each Python-backend model's `requirements.txt`), builds it
//! through the Docker Engine API with streamed progress, and pushes it with the registry credentials.
//! For repositories that need more than model files; the default OCI builder needs no daemon.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use futures_util::StreamExt;
use triton_deploy_aws::Secret;

/// The Dockerfile template (`templates/Dockerfile`).
pub const TEMPLATE: &str = include_str!("../../templates/Dockerfile");

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker Engine ({0}); is Docker running? DOCKER_HOST selects another engine"
    )]
    NoEngine(String),
    #[error("docker build failed: {0}")]
    Build(String),
    #[error("docker push failed: {0}")]
    Push(String),
    #[error("preparing the build context: {0}")]
    Context(#[from] std::io::Error),
}

/// A model to copy into the image.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub name: String,
    pub dir: PathBuf,
}

/// Files named `requirements.txt` in a model directory (relative paths), sorted.
fn requirements(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name() == "requirements.txt"
                && let Ok(rel) = p.strip_prefix(dir)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// Renders the Dockerfile for `models` on `base`.
pub fn render(
    base: &str,
    models: &[ModelSource],
    cmd: &[String],
    labels: &BTreeMap<String, String>,
) -> String {
    let copies: Vec<String> = models
        .iter()
        .map(|m| format!("COPY models/{0}/ /models/{0}/", m.name))
        .collect();
    let pips: Vec<String> = models
        .iter()
        .flat_map(|m| {
            requirements(&m.dir).into_iter().map(move |r| {
                format!(
                    "RUN python3 -m pip install --no-cache-dir -r /models/{}/{r}",
                    m.name
                )
            })
        })
        .collect();
    let label_lines: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("LABEL {}={}", json_str(k), json_str(v)))
        .collect();
    let cmd_json = serde_json::to_string(cmd).expect("json");
    TEMPLATE
        .replace("{{BASE}}", base)
        .replace("{{COPY_MODELS}}", &copies.join("\n"))
        .replace("{{PIP_INSTALLS}}", &pips.join("\n"))
        .replace("{{LABELS}}", &label_lines.join("\n"))
        .replace("{{CMD}}", &cmd_json)
}

/// Writes the build context (Dockerfile + models/) as a tar file.
fn context(dockerfile: &str, models: &[ModelSource]) -> std::io::Result<tempfile::NamedTempFile> {
    let file = tempfile::NamedTempFile::new()?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file.reopen()?));
    b.follow_symlinks(true);
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    for m in models {
        b.append_dir_all(format!("models/{}", m.name), &m.dir)?;
    }
    b.into_inner()?.flush()?;
    Ok(file)
}

/// Connects to the local engine (DOCKER_HOST or the default socket), negotiating the API version.
pub async fn connect() -> Result<Docker, DockerError> {
    let d =
        Docker::connect_with_local_defaults().map_err(|e| DockerError::NoEngine(e.to_string()))?;
    d.negotiate_version()
        .await
        .map_err(|e| DockerError::NoEngine(e.to_string()))
}

/// Builds `dockerfile` with `models` as `image_ref`, reporting build output lines through `log`.
pub async fn build(
    docker: &Docker,
    dockerfile: &str,
    models: &[ModelSource],
    image_ref: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, DockerError> {
    let ctx = context(dockerfile, models)?;
    let file = tokio::fs::File::open(ctx.path()).await?;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let opts = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(image_ref)
        .rm(true)
        .forcerm(true)
        .build();
    let mut out = docker.build_image(opts, None, Some(bollard::body_try_stream(stream)));
    let mut id = String::new();
    while let Some(item) = out.next().await {
        let info = item.map_err(|e| DockerError::Build(e.to_string()))?;
        if let Some(detail) = info.error_detail {
            return Err(DockerError::Build(detail.message.unwrap_or_default()));
        }
        if let Some(s) = info.stream {
            for line in s.lines().filter(|l| !l.trim().is_empty()) {
                log(line);
            }
        }
        if let Some(aux) = info.aux
            && let Some(i) = aux.id
        {
            id = i;
        }
    }
    Ok(id)
}

/// Pushes `name:tag` with `credentials`; returns the pushed manifest digest.
pub async fn push(
    docker: &Docker,
    name: &str,
    tag: &str,
    server: &str,
    credentials: (&str, &Secret),
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, DockerError> {
    let creds = DockerCredentials {
        username: Some(credentials.0.to_string()),
        password: Some(credentials.1.expose().to_string()),
        serveraddress: Some(server.to_string()),
        ..Default::default()
    };
    let opts = PushImageOptionsBuilder::new().tag(tag).build();
    let mut out = docker.push_image(name, Some(opts), Some(creds));
    let mut digest = None;
    while let Some(item) = out.next().await {
        let info = item.map_err(|e| DockerError::Push(e.to_string()))?;
        if let Some(detail) = info.error_detail {
            return Err(DockerError::Push(detail.message.unwrap_or_default()));
        }
        if let Some(s) = info.status {
            // The final line: "<tag>: digest: sha256:... size: N".
            if let Some(rest) = s.split("digest: ").nth(1) {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
            log(&s);
        }
    }
    digest.ok_or_else(|| DockerError::Push("the engine reported no digest".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_copy_per_model_and_pip_for_requirements() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/1")).unwrap();
        std::fs::write(d.path().join("a/1/requirements.txt"), "numpy\n").unwrap();
        std::fs::create_dir_all(d.path().join("b")).unwrap();
        let models = [
            ModelSource {
                name: "a".into(),
                dir: d.path().join("a"),
            },
            ModelSource {
                name: "b".into(),
                dir: d.path().join("b"),
            },
        ];
        let labels =
            BTreeMap::from([("ai.triton-deploy.models".to_string(), "a=1;b=1".to_string())]);
        let cmd = vec![
            "tritonserver".to_string(),
            "--model-repository=/models".to_string(),
        ];
        let f = render(
            "nvcr.io/nvidia/tritonserver:25.10-py3",
            &models,
            &cmd,
            &labels,
        );
        assert!(f.contains("FROM nvcr.io/nvidia/tritonserver:25.10-py3\n"));
        assert!(f.contains("COPY models/a/ /models/a/\nCOPY models/b/ /models/b/\n"));
        assert!(f.contains(
            "RUN python3 -m pip install --no-cache-dir -r /models/a/1/requirements.txt\n"
        ));
        assert!(f.contains("LABEL \"ai.triton-deploy.models\"=\"a=1;b=1\"\n"));
        assert!(f.contains("CMD [\"tritonserver\",\"--model-repository=/models\"]"));
        assert!(!f.contains("{{"), "every placeholder is filled");
    }
}
