//! The Docker Engine, as `run` uses it (bollard): what the host has (GPUs), images (inspect,
//! pull with credentials, load a `docker load` archive), and the container's life (create, start,
//! its log, its state, a file read out of it, stop and remove). Errors are [`EngineError`]s that
//! say what to do; credentials go in the registry-auth header and nowhere else.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ImportImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use triton_deploy_aws::Secret;

/// The label every container `run` starts carries (its value: the image it runs).
pub const LABEL: &str = "ai.triton-deploy.run";
/// The label of a container whose image `run` loaded itself (a repository packaged on the fly):
/// the image goes with the container.
pub const LOADED: &str = "ai.triton-deploy.run.loaded";

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No engine answered.
    #[error(
        "cannot reach the Docker Engine ({0}); is Docker running? DOCKER_HOST selects another engine"
    )]
    NoEngine(String),
    /// The image is neither here nor in its registry.
    #[error("image {image} not found: {reason}")]
    ImageNotFound {
        /// The reference asked for.
        image: String,
        /// The registry's or engine's words.
        reason: String,
    },
    /// The registry refused the credentials.
    #[error("pulling {image}: the registry refused the credentials ({reason})")]
    Denied {
        /// The reference asked for.
        image: String,
        /// The registry's words.
        reason: String,
    },
    /// A host port is taken.
    #[error("host port {port} is in use ({reason}); choose another with {flag}")]
    PortInUse {
        /// The port.
        port: u16,
        /// The option that sets it.
        flag: &'static str,
        /// Who said so.
        reason: String,
    },
    /// The engine may not set a resource limit (a sandboxed or rootless engine).
    #[error("the engine may not set the {limit} limit: {reason}")]
    Limit {
        /// The limit (`memlock`, `stack`).
        limit: &'static str,
        /// The engine's words.
        reason: String,
    },
    /// A container of that name exists.
    #[error(
        "a container named {0} exists already; `triton-deploy run --stop --name {0}` removes it, or pass another --name"
    )]
    NameTaken(String),
    /// Any other refusal of the engine.
    #[error("{what}: {reason}")]
    Api {
        /// What was being done.
        what: String,
        /// The engine's words.
        reason: String,
    },
    /// A local file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let what = what.into();
    move |e| EngineError::Api {
        what,
        reason: reason(&e),
    }
}

/// The engine's own message of an error, without bollard's wrapping.
fn reason(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An image the engine has.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Its ID (`sha256:...`).
    pub id: String,
    /// Its size on disk, bytes.
    pub size: u64,
    /// Its command (`CMD`).
    pub cmd: Vec<String>,
}

/// The ports, limits and devices of the container to create.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Its name.
    pub name: String,
    /// The image reference.
    pub image: String,
    /// The command (replacing the image's `CMD`).
    pub cmd: Vec<String>,
    /// Host address the ports are published on.
    pub bind: String,
    /// (container port, host port (0: any free one)).
    pub ports: Vec<(u16, u16)>,
    /// `/dev/shm` size, bytes.
    pub shm_bytes: i64,
    /// Resource limits: (name, soft = hard value), e.g. `("memlock", -1)` for unlimited.
    pub ulimits: Vec<(&'static str, i64)>,
    /// GPUs to request: `None` none, `Some(-1)` all, `Some(n)` n.
    pub gpus: Option<i64>,
    /// Labels.
    pub labels: HashMap<String, String>,
}

/// A container's state as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Whether it runs.
    pub running: bool,
    /// Its exit code once it stopped.
    pub exit_code: Option<i64>,
}

/// The engine, connected.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the local engine (DOCKER_HOST or the default socket), negotiating the API
    /// version.
    pub async fn connect() -> Result<Engine, EngineError> {
        use crate::package::docker::{self, DockerError};
        let docker = docker::connect().await.map_err(|e| match e {
            DockerError::NoEngine(why) => EngineError::NoEngine(why),
            other => EngineError::NoEngine(other.to_string()),
        })?;
        Ok(Engine { docker })
    }

    /// Whether the engine can give containers NVIDIA GPUs: an `nvidia` runtime, or NVIDIA's CDI
    /// devices.
    pub async fn has_gpus(&self) -> Result<bool, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| EngineError::NoEngine(reason(&e)))?;
        let runtime = info
            .runtimes
            .as_ref()
            .is_some_and(|r| r.keys().any(|k| k.contains("nvidia")));
        let cdi = info.discovered_devices.as_ref().is_some_and(|d| {
            d.iter().any(|d| {
                d.id.as_deref()
                    .is_some_and(|i| i.starts_with("nvidia.com/gpu"))
            })
        });
        Ok(runtime || cdi)
    }

    /// The image, if the engine has it.
    pub async fn image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                Ok(Some(LocalImage {
                    id: i.id.unwrap_or_default(),
                    size: i.size.unwrap_or_default().max(0) as u64,
                    cmd: config.cmd.unwrap_or_default(),
                }))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// Pulls `reference` with `credentials` (in the registry-auth header only), reporting the
    /// engine's progress lines through `log`.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<(&str, &Secret, &str)>,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<(), EngineError> {
        let opts = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let creds = credentials.map(|(user, password, server)| DockerCredentials {
            username: Some(user.to_string()),
            password: Some(password.expose().to_string()),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        });
        let mut out = self.docker.create_image(Some(opts), None, creds);
        while let Some(item) = out.next().await {
            let info = item.map_err(|e| pull_error(reference, &e))?;
            if let Some(detail) = info.error_detail {
                let msg = detail.message.unwrap_or_default();
                return Err(classify_pull(reference, msg));
            }
            if let Some(s) = info.status {
                let line = match info.id {
                    Some(id) => format!("{id}: {s}"),
                    None => s,
                };
                log(&line);
            }
        }
        Ok(())
    }

    /// Loads a `docker load` archive; returns the image reference it loaded.
    pub async fn load(&self, archive: &Path) -> Result<String, EngineError> {
        let bytes = tokio::fs::read(archive)
            .await
            .map_err(|e| EngineError::Io {
                path: archive.display().to_string(),
                source: e,
            })?;
        let opts = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut out =
            self.docker
                .import_image(opts, bollard::body_full(bytes::Bytes::from(bytes)), None);
        let mut loaded = None;
        while let Some(item) = out.next().await {
            let info = item.map_err(api("loading the image into the engine"))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api {
                    what: "loading the image into the engine".into(),
                    reason: detail.message.unwrap_or_default(),
                });
            }
            if let Some(s) = info.stream
                && let Some(r) = s.trim().strip_prefix("Loaded image: ")
            {
                loaded = Some(r.trim().to_string());
            }
        }
        loaded.ok_or_else(|| EngineError::Api {
            what: "loading the image into the engine".into(),
            reason: "the engine named no image".into(),
        })
    }

    /// Creates the container; returns its ID.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .ports
            .iter()
            .map(|(c, h)| {
                (
                    format!("{c}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some(spec.bind.clone()),
                        host_port: Some(if *h == 0 {
                            String::new()
                        } else {
                            h.to_string()
                        }),
                    }]),
                )
            })
            .collect();
        let host = HostConfig {
            port_bindings: Some(bindings),
            shm_size: Some(spec.shm_bytes),
            ulimits: Some(
                spec.ulimits
                    .iter()
                    .map(|(name, v)| ResourcesUlimits {
                        name: Some(name.to_string()),
                        soft: Some(*v),
                        hard: Some(*v),
                    })
                    .collect(),
            ),
            init: Some(true),
            device_requests: spec.gpus.map(|count| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: Some(count),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            exposed_ports: Some(spec.ports.iter().map(|(c, _)| format!("{c}/tcp")).collect()),
            labels: Some(spec.labels.clone()),
            host_config: Some(host),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        match self.docker.create_container(Some(opts), body).await {
            Ok(r) => Ok(r.id),
            Err(e) if status(&e) == Some(409) => Err(EngineError::NameTaken(spec.name.clone())),
            Err(e) if status(&e) == Some(404) => Err(EngineError::ImageNotFound {
                image: spec.image.clone(),
                reason: reason(&e),
            }),
            Err(e) => Err(api(format!("creating container {}", spec.name))(e)),
        }
    }

    /// Starts the container. A port conflict is told as such; a resource limit the engine may
    /// not set is [`EngineError::Limit`].
    pub async fn start(
        &self,
        id: &str,
        ports: &[(u16, u16, &'static str)],
    ) -> Result<(), EngineError> {
        self.docker.start_container(id, None).await.map_err(|e| {
            let r = reason(&e);
            if let Some(limit) = refused_limit(&r) {
                return EngineError::Limit { limit, reason: r };
            }
            let taken =
                r.contains("port is already allocated") || r.contains("address already in use");
            match ports
                .iter()
                .find(|(_, h, _)| *h != 0 && r.contains(&format!(":{h}")))
            {
                Some((_, h, flag)) if taken => EngineError::PortInUse {
                    port: *h,
                    flag,
                    reason: r,
                },
                _ => EngineError::Api {
                    what: "starting the container".into(),
                    reason: r,
                },
            }
        })
    }

    /// The host ports the engine published the container's ports on.
    pub async fn published(&self, id: &str) -> Result<HashMap<u16, u16>, EngineError> {
        let i = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(api("inspecting the container"))?;
        let mut out = HashMap::new();
        for (k, v) in i.network_settings.and_then(|n| n.ports).unwrap_or_default() {
            let Some(port) = k.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            if let Some(h) = v
                .unwrap_or_default()
                .iter()
                .find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()))
            {
                out.insert(port, h);
            }
        }
        Ok(out)
    }

    /// Whether it runs, and its exit code once it stopped; `None` when it is gone.
    pub async fn status(&self, id: &str) -> Result<Option<Status>, EngineError> {
        match self.docker.inspect_container(id, None).await {
            Ok(i) => {
                let s = i.state.unwrap_or_default();
                Ok(Some(Status {
                    running: s.running.unwrap_or(false),
                    exit_code: s.exit_code,
                }))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(api("inspecting the container")(e)),
        }
    }

    /// Follows the container's log (stdout and stderr), calling `on_line` for each line, until
    /// the container stops or the engine closes the stream.
    pub async fn follow(&self, id: &str, mut on_line: impl FnMut(String)) {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        while let Some(Ok(out)) = stream.next().await {
            for line in String::from_utf8_lossy(&out.into_bytes()).lines() {
                on_line(line.to_string());
            }
        }
    }

    /// A file of the container's filesystem (`None` when it is not there), read through the
    /// engine's archive API: no need for the container to run or to have a shell.
    pub async fn read_file(
        &self,
        id: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(id, Some(opts));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    tar_bytes.extend_from_slice(&b);
                    if tar_bytes.len() as u64 > limit + 4096 {
                        return Err(EngineError::Api {
                            what: format!("reading {path} from the container"),
                            reason: format!("larger than {limit} bytes"),
                        });
                    }
                }
                Err(e) if status(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(api(format!("reading {path} from the container"))(e)),
            }
        }
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries = archive.entries().map_err(|e| EngineError::Io {
            path: path.to_string(),
            source: e,
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| EngineError::Io {
                path: path.to_string(),
                source: e,
            })?;
            if entry.header().entry_type().is_file() {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut out).map_err(|e| EngineError::Io {
                    path: path.to_string(),
                    source: e,
                })?;
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// The last `n` lines of the container's log (all of it with `None`).
    pub async fn tail(&self, id: &str, n: Option<usize>) -> Vec<String> {
        let n = n.map_or("all".to_string(), |n| n.to_string());
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&n)
            .build();
        let chunks: Vec<_> = self.docker.logs(id, Some(opts)).collect().await;
        chunks
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|o| {
                String::from_utf8_lossy(&o.into_bytes())
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Stops the container (SIGTERM, then SIGKILL after `grace_seconds`) and removes it.
    pub async fn remove(&self, id: &str, grace_seconds: i32) -> Result<(), EngineError> {
        let stop = StopContainerOptionsBuilder::new().t(grace_seconds).build();
        match self.docker.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            // 304: already stopped; 404: gone.
            Err(e) if matches!(status(&e), Some(304 | 404)) => {}
            Err(e) => return Err(api("stopping the container")(e)),
        }
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // 409: removal already in progress.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(api("removing the container")(e)),
        }
    }

    /// Removes an image `run` loaded itself, unless another container still uses it.
    pub async fn remove_image(&self, reference: &str) {
        let _ = self
            .docker
            .remove_image(
                reference,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }

    /// The containers `run` started (by its label), as (ID, name, image, whether `run` loaded the
    /// image), `name` alone when given.
    pub async fn ours(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(String, String, String, bool)>, EngineError> {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        filters.insert("label", vec![LABEL.to_string()]);
        if let Some(n) = name {
            filters.insert("name", vec![format!("^/?{n}$")]);
        }
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(api("listing containers"))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let image = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL).cloned())
                    .or(c.image)
                    .unwrap_or_default();
                let loaded = c.labels.as_ref().is_some_and(|l| l.contains_key(LOADED));
                (c.id.unwrap_or_default(), name, image, loaded)
            })
            .collect())
    }
}

/// The limit a start failure names (`error setting rlimit type 8`): runc's numbers are
/// Linux's `RLIMIT_*`.
fn refused_limit(reason: &str) -> Option<&'static str> {
    let n: u32 = reason
        .split("rlimit type ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    match n {
        3 => Some("stack"),
        8 => Some("memlock"),
        _ => None,
    }
}

fn pull_error(image: &str, e: &bollard::errors::Error) -> EngineError {
    match status(e) {
        Some(404) => EngineError::ImageNotFound {
            image: image.to_string(),
            reason: reason(e),
        },
        _ => classify_pull(image, reason(e)),
    }
}

/// A pull's failure by the registry's words.
fn classify_pull(image: &str, msg: String) -> EngineError {
    let m = msg.to_lowercase();
    if m.contains("manifest unknown") || m.contains("not found") || m.contains("name unknown") {
        EngineError::ImageNotFound {
            image: image.to_string(),
            reason: msg,
        }
    } else if m.contains("unauthorized")
        || m.contains("denied")
        || m.contains("authentication required")
    {
        EngineError::Denied {
            image: image.to_string(),
            reason: msg,
        }
    } else {
        EngineError::Api {
            what: format!("pulling {image}"),
            reason: msg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_limits_are_named() {
        let r = "OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown";
        assert_eq!(refused_limit(r), Some("memlock"));
        assert_eq!(
            refused_limit("error setting rlimit type 3: x"),
            Some("stack")
        );
        assert_eq!(refused_limit("port is already allocated"), None);
    }

    #[test]
    fn pull_failures_are_told_by_kind() {
        assert!(matches!(
            classify_pull("r/x:1", "manifest unknown: manifest unknown".into()),
            EngineError::ImageNotFound { .. }
        ));
        assert!(matches!(
            classify_pull(
                "r/x:1",
                "Head \"http://r/v2/x/manifests/1\": unauthorized: authentication required".into()
            ),
            EngineError::Denied { .. }
        ));
        assert!(matches!(
            classify_pull("r/x:1", "connection refused".into()),
            EngineError::Api { .. }
        ));
    }
}
