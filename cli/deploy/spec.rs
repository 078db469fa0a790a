//! The deployment spec, `triton-deploy.toml`: what to run and where, in one short file. Parsed with
//! spans, so that every error names the file, line and key; unknown keys are errors; `[env.<name>]`
//! tables override the base values for one environment. The result is a resolved [`DeploymentSpec`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::triton::pbtxt::line_col;

/// A spec error: the file, line, column and key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    name: S<String>,
    cluster: S<String>,
    region: S<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSection {
    /// A full image reference (`<repo-uri>@sha256:...` or `:tag`).
    uri: S<String>,
    /// The ECR repository `push` uses; `rollout` takes its newest image when `uri` is not set.
    repository: S<String>,
    /// The model repository `push` packages.
    model_repository: S<String>,
    base: S<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComputeSection {
    instance_type: S<String>,
    /// More instance types the group may launch (Spot diversity), each with the same GPU count.
    instance_types: S<Vec<String>>,
    /// `al2023-gpu`, `al2-gpu`, `baked` (the AMI `ami build` published), an AMI ID (`ami-...`)
    /// or an SSM parameter path (`/...`).
    ami: S<String>,
    /// With `ami = "baked"`: zones where the baked AMI's snapshot has Fast Snapshot Restore on.
    fast_snapshot_restore: S<Vec<String>>,
    min_instances: S<u32>,
    max_instances: S<u32>,
    target_capacity: S<u32>,
    spot: S<bool>,
    /// With Spot: this many hosts on demand before any Spot host.
    on_demand_base: S<u32>,
    root_volume_gib: S<u32>,
    instance_warmup_seconds: S<u32>,
    max_scaling_step: S<u32>,
}

/// `[ami]`: how `ami build` bakes the image into a GPU AMI.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmiSection {
    /// The AMI baked on: `al2023-gpu` (default), `al2-gpu`, an AMI ID or an SSM parameter path.
    base: S<String>,
    /// The subnet the build instance runs in: one with a way out (public, or behind a NAT).
    subnet: S<String>,
    /// The build instance's type (default: `compute.instance_type`).
    instance_type: S<String>,
    /// The build instance's profile (default: the cluster stack's, which can pull from ECR).
    instance_profile: S<String>,
    /// The gp3 root volume's IOPS and throughput (MiB/s) while building.
    volume_iops: S<u32>,
    volume_throughput: S<u32>,
    /// How long a new host may spend reading the baked image's files before the ECS agent starts
    /// (0: no pre-read).
    preread_timeout_seconds: S<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSection {
    gpus: S<u32>,
    cpu: S<u32>,
    memory_mib: S<u32>,
    shm_size_mib: S<u32>,
    triton_args: S<Vec<String>>,
    desired_count: S<u32>,
    health_check_grace_seconds: S<u32>,
    stop_timeout_seconds: S<u32>,
    minimum_healthy_percent: S<u32>,
    maximum_percent: S<u32>,
    enable_exec: S<bool>,
    run_result: S<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    efs: S<bool>,
    mount_path: S<String>,
    uid: S<u32>,
    gid: S<u32>,
    /// `cache` (engine caches shared by all tasks) or `models` (a second model repository).
    holds: S<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    vpc_id: S<String>,
    subnets: S<Vec<String>>,
    internet_facing: S<bool>,
    allowed_cidrs: S<Vec<String>>,
    listener_port: S<u16>,
    certificate_arn: S<String>,
    /// How long the load balancer lets requests in flight finish after it stops sending a task new
    /// ones (the target group's deregistration delay).
    deregistration_delay_seconds: S<u32>,
    /// Which requests the shared load balancer sends to this service: `models` (its models'
    /// paths), `host` (its `hostname`), `path` (under its `path_prefix`) or `all` (every path no
    /// other service routes).
    route: S<String>,
    /// The name clients reach the service by: a DNS name on the load balancer, covered by the
    /// certificate. `verify`, `--smoke` and `bench -f` use it rather than the ALB's DNS name.
    hostname: S<String>,
    /// `route = "path"`: the prefix the service answers under (stripped before Triton sees it).
    path_prefix: S<String>,
    /// Triton's gRPC port behind the load balancer too (HTTPS listener and hostname needed).
    grpc: S<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoscalingSection {
    min_tasks: S<u32>,
    max_tasks: S<u32>,
    /// ALB requests per minute per task.
    target_requests_per_task: S<u32>,
    /// A `bench --format json` result whose recommendation sets the target.
    bench_result: S<String>,
    /// A second target-tracking policy on the service's average CPU, percent.
    cpu_target: S<u32>,
    scale_in_cooldown_seconds: S<u32>,
    scale_out_cooldown_seconds: S<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sections {
    service: Option<ServiceSection>,
    image: Option<ImageSection>,
    compute: Option<ComputeSection>,
    ami: Option<AmiSection>,
    task: Option<TaskSection>,
    storage: Option<StorageSection>,
    network: Option<NetworkSection>,
    autoscaling: Option<AutoscalingSection>,
}

/// The file: the sections, plus `[env.<name>]` overrides (serde's `flatten` would lose the spans).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    service: Option<ServiceSection>,
    image: Option<ImageSection>,
    compute: Option<ComputeSection>,
    ami: Option<AmiSection>,
    task: Option<TaskSection>,
    storage: Option<StorageSection>,
    network: Option<NetworkSection>,
    autoscaling: Option<AutoscalingSection>,
    #[serde(default)]
    env: BTreeMap<String, Sections>,
}

/// Which requests of the cluster's shared load balancer reach a service (`network.route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// `/v2/models/<model>` and `/v2/models/<model>/*` for each model of the service's repository
    /// (the default when the spec names one): the services of a cluster share one endpoint.
    Models,
    /// Every path no other service routes (the default without a model repository); one service
    /// per cluster.
    All,
    /// Every request for `network.hostname`.
    Host,
    /// Every path under `network.path_prefix`, rewritten to the path Triton serves.
    Path,
}

/// Where the GPU AMI comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Ami {
    /// An SSM parameter holding the AMI ID (the ECS-optimized GPU AMIs' are public).
    SsmParameter(String),
    /// A fixed AMI ID (e.g. a custom image built with Packer).
    Id(String),
    /// The AMI `ami build` baked the image into, behind the cluster's parameter
    /// (`/triton-deploy/<cluster>/ami`): hosts find the image on disk.
    Baked(String),
}

impl Ami {
    pub const AL2023_GPU: &str =
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id";
    pub const AL2_GPU: &str =
        "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id";

    /// The SSM parameter `ami build` publishes a cluster's baked AMI to.
    pub fn baked_parameter(cluster: &str) -> String {
        format!("/triton-deploy/{cluster}/ami")
    }

    /// The SSM parameter behind the AMI, if one is.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            Ami::SsmParameter(p) | Ami::Baked(p) => Some(p),
            Ami::Id(_) => None,
        }
    }
}

/// `[ami]` resolved: what `ami build` bakes on, and how new hosts read the baked image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bake {
    /// The AMI baked on (never [`Ami::Baked`]).
    pub base: Ami,
    pub subnet: Option<String>,
    pub instance_type: String,
    pub instance_profile: Option<String>,
    pub volume_iops: u32,
    pub volume_throughput: u32,
    /// 0: no pre-read at boot.
    pub preread_timeout_seconds: u32,
    /// Zones with Fast Snapshot Restore on for the baked AMI's snapshot.
    pub fast_snapshot_restore: Vec<String>,
}

/// The resolved deployment: every value set, defaults applied, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeploymentSpec {
    pub service: String,
    pub cluster: String,
    pub region: Option<String>,
    pub image_uri: Option<String>,
    pub image_repository: Option<String>,
    pub model_repository: Option<String>,
    pub instance_type: String,
    /// Every instance type the hosts may be (`instance_type` first); more than one gives the Auto
    /// Scaling group a mixed-instances policy.
    pub instance_types: Vec<String>,
    pub ami: Ami,
    /// `[ami]`: how `ami build` bakes the image into an AMI.
    pub bake: Bake,
    pub min_instances: u32,
    pub max_instances: u32,
    pub target_capacity: u32,
    pub spot: bool,
    pub on_demand_base: u32,
    pub root_volume_gib: u32,
    pub instance_warmup_seconds: u32,
    pub max_scaling_step: u32,
    pub gpus: u32,
    pub cpu: u32,
    pub memory_mib: u32,
    pub shm_size_mib: u32,
    pub triton_args: Vec<String>,
    pub desired_count: u32,
    pub health_check_grace_seconds: u32,
    /// `task.run_result`: the `run --out` file whose measured time to ready `rollout --plan`
    /// checks the grace period against (relative to the spec's directory).
    pub run_result: Option<String>,
    pub stop_timeout_seconds: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub efs: bool,
    pub efs_mount_path: String,
    pub efs_uid: u32,
    pub efs_gid: u32,
    pub efs_holds: String,
    pub vpc_id: Option<String>,
    pub subnets: Vec<String>,
    pub internet_facing: bool,
    pub allowed_cidrs: Vec<String>,
    pub listener_port: u16,
    pub certificate_arn: Option<String>,
    pub deregistration_delay_seconds: u32,
    /// `network.route`: which requests of the cluster's load balancer reach this service.
    pub route: RouteKind,
    /// `network.hostname`: the name clients reach the service by.
    pub hostname: Option<String>,
    /// `network.path_prefix` (with `route = "path"`): `/name`, no trailing slash.
    pub path_prefix: Option<String>,
    /// `network.grpc`: Triton's gRPC port behind the load balancer, routed by hostname.
    pub grpc: bool,
    pub min_tasks: u32,
    pub max_tasks: u32,
    pub target_requests_per_task: Option<u32>,
    pub bench_result: Option<String>,
    pub cpu_target: Option<u32>,
    pub scale_in_cooldown_seconds: u32,
    pub scale_out_cooldown_seconds: u32,
    /// ECS Exec into the Triton container (`aws ecs execute-command`).
    pub enable_exec: bool,
    /// The environment applied (`--env`), if any.
    pub environment: Option<String>,
}

macro_rules! merge {
    ($base:expr, $over:expr, $($f:ident),*) => {
        $( if $over.$f.is_some() { $base.$f = $over.$f.clone(); } )*
    };
}

fn merge_sections(base: &mut Sections, over: &Sections) {
    macro_rules! section {
        ($name:ident, $($f:ident),*) => {
            if let Some(o) = &over.$name {
                let b = base.$name.get_or_insert_with(Default::default);
                merge!(b, o, $($f),*);
            }
        };
    }
    section!(service, name, cluster, region);
    section!(image, uri, repository, model_repository, base);
    section!(
        compute,
        instance_type,
        instance_types,
        ami,
        fast_snapshot_restore,
        min_instances,
        max_instances,
        target_capacity,
        spot,
        on_demand_base,
        root_volume_gib,
        instance_warmup_seconds,
        max_scaling_step
    );
    section!(
        ami,
        base,
        subnet,
        instance_type,
        instance_profile,
        volume_iops,
        volume_throughput,
        preread_timeout_seconds
    );
    section!(
        task,
        gpus,
        cpu,
        memory_mib,
        shm_size_mib,
        triton_args,
        desired_count,
        health_check_grace_seconds,
        stop_timeout_seconds,
        minimum_healthy_percent,
        maximum_percent,
        enable_exec,
        run_result
    );
    section!(storage, efs, mount_path, uid, gid, holds);
    section!(
        network,
        vpc_id,
        subnets,
        internet_facing,
        allowed_cidrs,
        listener_port,
        certificate_arn,
        deregistration_delay_seconds,
        route,
        hostname,
        path_prefix,
        grpc
    );
    section!(
        autoscaling,
        min_tasks,
        max_tasks,
        target_requests_per_task,
        bench_result,
        cpu_target,
        scale_in_cooldown_seconds,
        scale_out_cooldown_seconds
    );
}

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> SpecError {
        let (line, column) = line_col(self.src, span.start);
        SpecError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn val<T: Clone>(s: &S<T>) -> Option<T> {
    s.as_ref().map(|v| v.get_ref().clone())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name a host-header rule and a certificate can match: two or more labels, no wildcard.
fn valid_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A path prefix the load balancer matches and strips literally: `/a` or `/a/b`, letters,
/// digits, `-`, `_` and `.`, not Triton's own `/v2`.
fn check_path_prefix(p: &str) -> Result<(), &'static str> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err("starts with '/'");
    };
    if rest.is_empty() || rest.ends_with('/') || rest.split('/').any(str::is_empty) {
        return Err("segments after '/', none empty, no trailing '/'");
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return Err(
            "letters, digits, '-', '_', '.' and '/' only (the load balancer reads '*' and '?' as wildcards)",
        );
    }
    if rest.split('/').any(|s| s == "." || s == "..") {
        return Err("no '.' or '..' segments");
    }
    if p == "/v2" || p.starts_with("/v2/") {
        return Err("Triton's own paths start with /v2");
    }
    if p.len() > 100 {
        return Err("at most 100 characters");
    }
    Ok(())
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

/// GPUs per instance of the common GPU instance types (the preflight asks EC2 for the others).
pub fn known_gpus(instance_type: &str) -> Option<u32> {
    let (family, size) = instance_type.split_once('.')?;
    Some(match (family, size) {
        ("g4dn", "12xlarge")
        | ("g5" | "g6" | "g6e", "12xlarge" | "24xlarge")
        | ("p3", "8xlarge") => 4,
        ("g4dn", "metal")
        | ("g5" | "g6" | "g6e", "48xlarge")
        | ("p3", "16xlarge")
        | ("p3dn" | "p4d" | "p4de", "24xlarge")
        | ("p5" | "p5e" | "p5en", "48xlarge") => 8,
        ("g4dn", "xlarge" | "2xlarge" | "4xlarge" | "8xlarge" | "16xlarge") => 1,
        ("g5" | "g6" | "g6e", "xlarge" | "2xlarge" | "4xlarge" | "8xlarge" | "16xlarge") => 1,
        ("p3", "2xlarge") | ("p5", "4xlarge") => 1,
        _ => return None,
    })
}

/// Whether `max_instances` hosts with `per_instance` GPUs each hold the service during a rolling
/// deployment (one task more than `max_tasks` when `minimum_healthy_percent` is 100).
pub fn rolling_room(
    spec: &DeploymentSpec,
    per_instance: u32,
) -> Result<(), super::error::DeployError> {
    if spec.gpus > per_instance {
        return Err(super::error::DeployError::Preflight(format!(
            "task.gpus = {} but a {} has {per_instance} GPU(s): pick a larger instance type or fewer GPUs",
            spec.gpus, spec.instance_type
        )));
    }
    let tasks_per_instance = u64::from(per_instance / spec.gpus.max(1));
    let room = u64::from(spec.max_instances) * tasks_per_instance;
    let needed = u64::from(spec.max_tasks) + u64::from(spec.minimum_healthy_percent >= 100);
    if needed > room {
        return Err(super::error::DeployError::Preflight(format!(
            "{} x {} fit {room} task(s), but a rolling deployment of {} task(s) needs {needed}: raise compute.max_instances to {}",
            spec.max_instances,
            spec.instance_type,
            spec.max_tasks,
            needed.div_ceil(tasks_per_instance.max(1))
        )));
    }
    Ok(())
}

/// Reads and resolves `file`, applying `[env.<environment>]` when given.
pub fn load(file: &Path, environment: Option<&str>) -> Result<DeploymentSpec, SpecError> {
    let src = std::fs::read_to_string(file).map_err(|e| SpecError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read the spec: {e}"),
    })?;
    parse(file, &src, environment)
}

/// Parses spec text (`file` names it in errors).
pub fn parse(
    file: &Path,
    src: &str,
    environment: Option<&str>,
) -> Result<DeploymentSpec, SpecError> {
    let cx = Ctx { file, src };
    let doc: SpecFile = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = src
            .get(span.clone())
            .filter(|k| !k.contains('\n') && k.len() < 64)
            .unwrap_or("")
            .trim()
            .to_string();
        cx.err(span, &key, e.message().trim().to_string())
    })?;
    let mut s = Sections {
        service: doc.service,
        image: doc.image,
        compute: doc.compute,
        ami: doc.ami,
        task: doc.task,
        storage: doc.storage,
        network: doc.network,
        autoscaling: doc.autoscaling,
    };
    if let Some(name) = environment {
        let over = doc.env.get(name).ok_or_else(|| {
            let known = doc.env.keys().cloned().collect::<Vec<_>>().join(", ");
            cx.err(
                0..0,
                "env",
                format!(
                    "no [env.{name}] table in the spec (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                    }
                ),
            )
        })?;
        merge_sections(&mut s, over);
    }
    resolve(&cx, s, environment)
}

/// `[compute]` resolved.
struct Compute {
    instance_type: String,
    instance_types: Vec<String>,
    ami: Ami,
    min_instances: u32,
    max_instances: u32,
    target_capacity: u32,
    root_volume_gib: u32,
}

/// The sizing half of `[task]` resolved.
struct TaskSize {
    gpus: u32,
    memory_mib: u32,
    cpu: u32,
    maximum_percent: u32,
    minimum_healthy_percent: u32,
}

/// `[network]` resolved.
struct Network {
    route: RouteKind,
    hostname: Option<String>,
    path_prefix: Option<String>,
    grpc: bool,
    subnets: Vec<String>,
    allowed_cidrs: Vec<String>,
    internet_facing: bool,
    certificate_arn: Option<String>,
    listener_port: u16,
}

/// The task counts of `[autoscaling]` and `[task]` resolved.
struct Counts {
    min_tasks: u32,
    max_tasks: u32,
    desired_count: u32,
}

/// The service's name and cluster; the image given one way only.
fn service_section(
    cx: &Ctx,
    service: &ServiceSection,
    image: &ImageSection,
) -> Result<(String, String), SpecError> {
    let name = service.name.as_ref().ok_or_else(|| {
        cx.err(
            0..0,
            "service.name",
            "missing: every spec names its service",
        )
    })?;
    if !valid_name(name.get_ref()) {
        return Err(cx.err(
            name.span(),
            "service.name",
            "use 1-32 letters, digits and '-' (it names AWS resources)",
        ));
    }
    let cluster = val(&service.cluster).unwrap_or_else(|| format!("{}-gpu", name.get_ref()));
    if let Some(c) = &service.cluster
        && !valid_name(c.get_ref())
    {
        return Err(cx.err(
            c.span(),
            "service.cluster",
            "use 1-32 letters, digits and '-'",
        ));
    }
    if let (Some(u), Some(_)) = (&image.uri, &image.repository) {
        return Err(cx.err(
            u.span(),
            "image.uri",
            "set either image.uri or image.repository, not both",
        ));
    }

    Ok((name.get_ref().clone(), cluster))
}

/// A GPU instance type, the AMI, and the group's bounds.
const GPU_FAMILIES: [&str; 18] = [
    "p2.", "p3.", "p4d.", "p4de.", "p5.", "p5e.", "p5en.", "p6", "g3.", "g3s.", "g4dn.", "g4ad.",
    "g5.", "g5g.", "g6.", "g6e.", "g6f.", "gr6.",
];

/// `compute.instance_types` resolved: `instance_type` first, then the others, each a GPU type
/// with the same GPU count where it is known.
fn instance_types(
    cx: &Ctx,
    compute: &ComputeSection,
    instance_type: &str,
) -> Result<Vec<String>, SpecError> {
    let mut types = vec![instance_type.to_string()];
    let Some(list) = &compute.instance_types else {
        return Ok(types);
    };
    let err = |m: String| cx.err(list.span(), "compute.instance_types", m);
    if list.get_ref().is_empty() {
        return Err(err(
            "an empty list: leave it out, or name the types the hosts may be".into(),
        ));
    }
    for t in list.get_ref() {
        if !GPU_FAMILIES.iter().any(|f| t.starts_with(f)) {
            return Err(err(format!(
                "'{t}' is not a GPU instance type (g4dn, g5, g6, g6e, p4d, p5, ...)"
            )));
        }
        if !types.contains(t) {
            types.push(t.clone());
        }
    }
    let known: Vec<(&String, u32)> = types
        .iter()
        .filter_map(|t| Some((t, known_gpus(t)?)))
        .collect();
    if let Some((a, ga)) = known.first()
        && let Some((b, gb)) = known.iter().find(|(_, g)| g != ga)
    {
        return Err(err(format!(
            "{a} has {ga} GPU(s) and {b} {gb}: the types of one group need the same GPU count, or tasks placed for one do not fit the other"
        )));
    }
    Ok(types)
}

/// An AMI given as `al2023-gpu`, `al2-gpu`, an AMI ID or an SSM parameter path (`key` names it
/// in errors, `names` the words it takes).
fn ami_source(
    cx: &Ctx,
    given: Option<&Spanned<String>>,
    key: &str,
    names: &str,
) -> Result<Ami, SpecError> {
    Ok(match given.map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("al2023-gpu", _)) => Ami::SsmParameter(Ami::AL2023_GPU.into()),
        Some(("al2-gpu", _)) => Ami::SsmParameter(Ami::AL2_GPU.into()),
        Some((p, _)) if p.starts_with('/') => Ami::SsmParameter(p.into()),
        Some((id, _))
            if id.starts_with("ami-")
                && id.len() > 4
                && id[4..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ami::Id(id.into())
        }
        Some((other, span)) => {
            return Err(cx.err(
                span,
                key,
                format!(
                    "'{other}': use {names}, an AMI ID (ami-...) or an SSM parameter path (/...)"
                ),
            ));
        }
    })
}

/// An availability zone's name: `us-east-1a`, `eu-central-1b`, `us-gov-west-1a`.
fn valid_zone(z: &str) -> bool {
    let Some(last) = z.chars().last() else {
        return false;
    };
    let region = &z[..z.len() - last.len_utf8()];
    last.is_ascii_lowercase()
        && region.split('-').count() >= 3
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[ami]` (and `compute.fast_snapshot_restore`) resolved.
fn bake_section(
    cx: &Ctx,
    bake: &AmiSection,
    compute: &ComputeSection,
    c: &Compute,
) -> Result<Bake, SpecError> {
    let base = ami_source(cx, bake.base.as_ref(), "ami.base", "al2023-gpu, al2-gpu")?;
    if let Some(s) = &bake.subnet
        && !(s.get_ref().starts_with("subnet-") && s.get_ref().len() > 7)
    {
        return Err(cx.err(s.span(), "ami.subnet", "a subnet ID (subnet-...)"));
    }
    let instance_type = val(&bake.instance_type).unwrap_or_else(|| c.instance_type.clone());
    if let Some(t) = &bake.instance_type
        && !(t.get_ref().contains('.')
            && t.get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return Err(cx.err(
            t.span(),
            "ami.instance_type",
            "an EC2 instance type (g5.xlarge, m6i.large, ...)",
        ));
    }
    let volume_iops = val(&bake.volume_iops).unwrap_or(3000);
    if !(3000..=16_000).contains(&volume_iops) {
        return Err(cx.err(
            bake.volume_iops.as_ref().expect("set").span(),
            "ami.volume_iops",
            "gp3 takes 3000-16000 IOPS",
        ));
    }
    let volume_throughput = val(&bake.volume_throughput).unwrap_or(250);
    if !(125..=1000).contains(&volume_throughput) || volume_throughput * 4 > volume_iops {
        let span = bake
            .volume_throughput
            .as_ref()
            .or(bake.volume_iops.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "ami.volume_throughput",
            format!("gp3 takes 125-1000 MiB/s, at most a quarter of the IOPS ({volume_iops} IOPS: at most {} MiB/s)", (volume_iops / 4).min(1000)),
        ));
    }
    let preread_timeout_seconds = val(&bake.preread_timeout_seconds).unwrap_or(900);
    if preread_timeout_seconds > 3600 {
        return Err(cx.err(
            bake.preread_timeout_seconds.as_ref().expect("set").span(),
            "ami.preread_timeout_seconds",
            "at most 3600 (an hour): a host that reads longer is better served by compute.fast_snapshot_restore",
        ));
    }
    let fast_snapshot_restore = val(&compute.fast_snapshot_restore).unwrap_or_default();
    if let Some(f) = &compute.fast_snapshot_restore {
        if !matches!(c.ami, Ami::Baked(_)) {
            return Err(cx.err(
                f.span(),
                "compute.fast_snapshot_restore",
                "only for a baked AMI: set compute.ami = \"baked\"",
            ));
        }
        if let Some(bad) = fast_snapshot_restore.iter().find(|z| !valid_zone(z)) {
            return Err(cx.err(
                f.span(),
                "compute.fast_snapshot_restore",
                format!("'{bad}' is not an availability zone (us-east-1a, ...)"),
            ));
        }
        if fast_snapshot_restore.len() > 10 {
            return Err(cx.err(
                f.span(),
                "compute.fast_snapshot_restore",
                "at most 10 zones (EC2's limit per snapshot)",
            ));
        }
    }
    Ok(Bake {
        base,
        subnet: val(&bake.subnet),
        instance_type,
        instance_profile: val(&bake.instance_profile),
        volume_iops,
        volume_throughput,
        preread_timeout_seconds,
        fast_snapshot_restore,
    })
}

fn compute_section(
    cx: &Ctx,
    compute: &ComputeSection,
    cluster: &str,
) -> Result<Compute, SpecError> {
    let instance_type = val(&compute.instance_type)
        .or_else(|| val(&compute.instance_types).and_then(|t| t.first().cloned()))
        .unwrap_or_else(|| "g5.xlarge".into());
    if !GPU_FAMILIES.iter().any(|f| instance_type.starts_with(f)) {
        let span = compute
            .instance_type
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "compute.instance_type",
            format!(
                "'{instance_type}' is not a GPU instance type (g4dn, g5, g6, g6e, p4d, p5, ...)"
            ),
        ));
    }
    let ami = match &compute.ami {
        Some(a) if a.get_ref() == "baked" => Ami::Baked(Ami::baked_parameter(cluster)),
        a => ami_source(cx, a.as_ref(), "compute.ami", "al2023-gpu, al2-gpu, baked")?,
    };
    let min_instances = val(&compute.min_instances).unwrap_or(1);
    let max_instances = val(&compute.max_instances).unwrap_or(min_instances.max(2));
    if max_instances < min_instances || max_instances == 0 {
        let span = compute
            .max_instances
            .as_ref()
            .or(compute.min_instances.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "compute.max_instances",
            format!("must be at least min_instances ({min_instances}) and at least 1"),
        ));
    }
    let target_capacity = val(&compute.target_capacity).unwrap_or(90);
    if !(1..=100).contains(&target_capacity) {
        return Err(cx.err(
            compute.target_capacity.as_ref().expect("set").span(),
            "compute.target_capacity",
            "must be 1-100 (percent of the group the tasks should fill)",
        ));
    }
    let root_volume_gib = val(&compute.root_volume_gib).unwrap_or(200);
    if root_volume_gib < 50 {
        return Err(cx.err(compute.root_volume_gib.as_ref().expect("set").span(), "compute.root_volume_gib", "at least 50 GiB: tritonserver images are 10+ GB and layers are unpacked on the root volume"));
    }

    let instance_types = instance_types(cx, compute, &instance_type)?;
    Ok(Compute {
        instance_type,
        instance_types,
        ami,
        min_instances,
        max_instances,
        target_capacity,
        root_volume_gib,
    })
}

/// GPUs, memory and CPU per task, and the rolling deployment's percentages.
fn task_section(cx: &Ctx, task: &TaskSection, instance_type: &str) -> Result<TaskSize, SpecError> {
    let gpus = val(&task.gpus).unwrap_or(1);
    if gpus == 0 {
        return Err(cx.err(
            task.gpus.as_ref().expect("set").span(),
            "task.gpus",
            "must be at least 1 (this is a GPU service)",
        ));
    }
    let memory_mib = val(&task.memory_mib).unwrap_or(14_000);
    let cpu = val(&task.cpu).unwrap_or(3072);
    let maximum_percent = val(&task.maximum_percent).unwrap_or(200);
    let minimum_healthy_percent = val(&task.minimum_healthy_percent).unwrap_or(100);
    if maximum_percent < 100
        || minimum_healthy_percent > 100
        || maximum_percent <= minimum_healthy_percent && minimum_healthy_percent == 100
    {
        let span = task
            .maximum_percent
            .as_ref()
            .or(task.minimum_healthy_percent.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "task.maximum_percent", "maximum_percent must be >= 100 and above minimum_healthy_percent (<= 100), or a rolling deployment cannot start a new task"));
    }

    if let Some(per) = known_gpus(instance_type)
        && gpus > per
    {
        {
            let span = task.gpus.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return Err(cx.err(span, "task.gpus", format!("{gpus} GPUs per task, but a {instance_type} has {per}: pick a larger instance type or fewer GPUs")));
        }
    }
    Ok(TaskSize {
        gpus,
        memory_mib,
        cpu,
        maximum_percent,
        minimum_healthy_percent,
    })
}

/// What the EFS volume holds and where it is mounted.
fn storage_section(cx: &Ctx, storage: &StorageSection) -> Result<(String, String), SpecError> {
    let holds = val(&storage.holds).unwrap_or_else(|| "cache".into());
    if holds != "cache" && holds != "models" {
        return Err(cx.err(storage.holds.as_ref().expect("set").span(), "storage.holds", "use 'cache' (engine caches shared by all tasks) or 'models' (a second model repository)"));
    }
    let mount_path = val(&storage.mount_path).unwrap_or_else(|| {
        if holds == "models" {
            "/efs-models".into()
        } else {
            "/cache".into()
        }
    });
    if !mount_path.starts_with('/') || mount_path == "/models" {
        return Err(cx.err(
            storage.mount_path.as_ref().expect("set").span(),
            "storage.mount_path",
            "an absolute path other than /models (the image's own repository)",
        ));
    }

    Ok((holds, mount_path))
}

/// Subnets (two zones at least, with their VPC), who may connect, and the listener.
fn network_section(
    cx: &Ctx,
    network: &NetworkSection,
    has_models: bool,
) -> Result<Network, SpecError> {
    let subnets = val(&network.subnets).unwrap_or_default();
    if let Some(sn) = &network.subnets {
        if subnets.len() < 2 {
            return Err(cx.err(sn.span(), "network.subnets", format!("{} subnet(s): the Auto Scaling group and the load balancer need subnets in at least 2 availability zones", subnets.len())));
        }
        if let Some(bad) = subnets.iter().find(|s| !s.starts_with("subnet-")) {
            return Err(cx.err(
                sn.span(),
                "network.subnets",
                format!("'{bad}' is not a subnet ID (subnet-...)"),
            ));
        }
    }
    if let (Some(sn), None) = (&network.subnets, &network.vpc_id) {
        return Err(cx.err(
            sn.span(),
            "network.vpc_id",
            "explicit subnets need the VPC they belong to (network.vpc_id)",
        ));
    }
    let allowed_cidrs =
        val(&network.allowed_cidrs).unwrap_or_else(|| vec![String::from("10.0.0.0/8")]);
    if let Some(bad) = allowed_cidrs.iter().find(|c| !valid_cidr(c)) {
        return Err(cx.err(
            network.allowed_cidrs.as_ref().expect("set").span(),
            "network.allowed_cidrs",
            format!("'{bad}' is not an IPv4 CIDR (a.b.c.d/n)"),
        ));
    }
    let internet_facing = val(&network.internet_facing).unwrap_or(false);
    let certificate_arn = val(&network.certificate_arn);
    let listener_port =
        val(&network.listener_port).unwrap_or(if certificate_arn.is_some() { 443 } else { 80 });
    let route = match network.route.as_ref() {
        None if has_models => RouteKind::Models,
        None => RouteKind::All,
        Some(r) => match r.get_ref().as_str() {
            "models" if has_models => RouteKind::Models,
            "models" => {
                return Err(cx.err(
                    r.span(),
                    "network.route",
                    "\"models\" routes the paths of each model of image.model_repository, and the spec names none (\"all\" takes every path no other service routes)",
                ));
            }
            "all" => RouteKind::All,
            "host" => RouteKind::Host,
            "path" => RouteKind::Path,
            other => {
                return Err(cx.err(
                    r.span(),
                    "network.route",
                    format!("'{other}': one of \"models\" (each model's /v2/models/<name> paths), \"host\" (every request for network.hostname), \"path\" (every path under network.path_prefix) or \"all\" (every path no other service of the cluster routes)"),
                ));
            }
        },
    };
    let hostname = match &network.hostname {
        None => None,
        Some(h) => {
            let name = h.get_ref().to_ascii_lowercase();
            if !valid_hostname(&name) {
                return Err(cx.err(
                    h.span(),
                    "network.hostname",
                    format!("'{}' is not a DNS name (labels of letters, digits and '-', at most 63 characters each and 253 in all, with a dot; no wildcard)", h.get_ref()),
                ));
            }
            Some(name)
        }
    };
    let route_span = network.route.as_ref().map(|r| r.span()).unwrap_or(0..0);
    if route == RouteKind::Host && hostname.is_none() {
        return Err(cx.err(
            route_span.clone(),
            "network.route",
            "\"host\" routes the requests for network.hostname, and the spec sets none",
        ));
    }
    let path_prefix = match (&network.path_prefix, route) {
        (None, RouteKind::Path) => {
            return Err(cx.err(
                route_span,
                "network.route",
                "\"path\" routes the paths under network.path_prefix, and the spec sets none",
            ));
        }
        (None, _) => None,
        (Some(p), RouteKind::Path) => {
            let prefix = p.get_ref();
            if let Err(why) = check_path_prefix(prefix) {
                return Err(cx.err(
                    p.span(),
                    "network.path_prefix",
                    format!("'{prefix}': {why}"),
                ));
            }
            Some(prefix.clone())
        }
        (Some(p), _) => {
            return Err(cx.err(
                p.span(),
                "network.path_prefix",
                "a path prefix needs network.route = \"path\"",
            ));
        }
    };
    let grpc = val(&network.grpc).unwrap_or(false);
    if let Some(g) = network.grpc.as_ref().filter(|_| grpc)
        && (certificate_arn.is_none() || hostname.is_none())
    {
        return Err(cx.err(
                g.span(),
                "network.grpc",
                "gRPC through the load balancer needs HTTPS (network.certificate_arn) and the name its clients use (network.hostname): the load balancer speaks gRPC on HTTPS listeners only, and routes it by host",
            ));
    }

    Ok(Network {
        route,
        hostname,
        path_prefix,
        grpc,
        subnets,
        allowed_cidrs,
        internet_facing,
        certificate_arn,
        listener_port,
    })
}

/// Task counts that the hosts hold during a rolling deployment, and the scaling policy's limits.
fn autoscaling_section(
    cx: &Ctx,
    autoscaling: &AutoscalingSection,
    task: &TaskSection,
    compute: &ComputeSection,
    c: &Compute,
    t: &TaskSize,
) -> Result<Counts, SpecError> {
    let (instance_type, max_instances) = (&c.instance_type, c.max_instances);
    let (gpus, minimum_healthy_percent) = (t.gpus, t.minimum_healthy_percent);
    let min_tasks = val(&autoscaling.min_tasks).unwrap_or(1);
    // By default the service scales to what the hosts hold, less one slot for rolling deployments.
    let default_max_tasks = match known_gpus(instance_type) {
        Some(per) => (max_instances * (per / gpus.max(1)))
            .saturating_sub(1)
            .max(1),
        None => max_instances,
    };
    let max_tasks = val(&autoscaling.max_tasks).unwrap_or(min_tasks.max(default_max_tasks));
    if max_tasks < min_tasks {
        return Err(cx.err(
            autoscaling.max_tasks.as_ref().expect("set").span(),
            "autoscaling.max_tasks",
            format!("must be at least min_tasks ({min_tasks})"),
        ));
    }
    if let (Some(_), Some(b)) = (
        &autoscaling.target_requests_per_task,
        &autoscaling.bench_result,
    ) {
        return Err(cx.err(
            b.span(),
            "autoscaling.bench_result",
            "set either target_requests_per_task or bench_result, not both",
        ));
    }
    if let Some(per) = known_gpus(instance_type) {
        // With minimum_healthy_percent 100 a rolling deployment starts a new task before it stops an
        // old one: the hosts need room for one task more than the most the service scales to.
        let tasks_per_instance = u64::from(per / gpus);
        let room = u64::from(max_instances) * tasks_per_instance;
        let needed = u64::from(max_tasks) + u64::from(minimum_healthy_percent >= 100);
        if needed > room {
            let span = compute
                .max_instances
                .as_ref()
                .or(autoscaling.max_tasks.as_ref())
                .map(|s| s.span())
                .unwrap_or(0..0);
            return Err(cx.err(span, "compute.max_instances", format!(
                "{max_instances} x {instance_type} fit {room} task(s) of {gpus} GPU(s), but a rolling deployment of {max_tasks} task(s) at minimum_healthy_percent {minimum_healthy_percent} needs {needed}: raise max_instances to {}, lower autoscaling.max_tasks, or lower task.minimum_healthy_percent",
                needed.div_ceil(tasks_per_instance.max(1))
            )));
        }
    }
    if let Some(c) = &autoscaling.cpu_target
        && !(1..=100).contains(c.get_ref())
    {
        return Err(cx.err(
            c.span(),
            "autoscaling.cpu_target",
            "must be a percentage between 1 and 100",
        ));
    }
    for (key, v) in [
        (
            "autoscaling.scale_in_cooldown_seconds",
            &autoscaling.scale_in_cooldown_seconds,
        ),
        (
            "autoscaling.scale_out_cooldown_seconds",
            &autoscaling.scale_out_cooldown_seconds,
        ),
    ] {
        if let Some(v) = v
            && *v.get_ref() > 3600
        {
            return Err(cx.err(v.span(), key, "at most 3600 seconds"));
        }
    }
    let desired_count = val(&task.desired_count).unwrap_or(min_tasks);
    if desired_count < min_tasks || desired_count > max_tasks {
        return Err(cx.err(
            task.desired_count.as_ref().expect("set").span(),
            "task.desired_count",
            format!("must be within autoscaling min_tasks..max_tasks ({min_tasks}..{max_tasks})"),
        ));
    }

    Ok(Counts {
        min_tasks,
        max_tasks,
        desired_count,
    })
}

/// The stop of a task, in order: the load balancer stops sending it requests and lets those in
/// flight finish (the deregistration delay), then ECS sends SIGTERM and Triton, refusing new
/// requests, waits for the inferences it holds (`--exit-timeout-secs`) before it exits, and ECS
/// kills it at `stopTimeout`. Each step must fit inside the next; on Spot the whole stop must fit
/// in the two minutes' notice.
struct Drain {
    deregistration_delay_seconds: u32,
    stop_timeout_seconds: u32,
    triton_args: Vec<String>,
}

/// `--exit-timeout-secs` in Triton's arguments (both `--flag=N` and `--flag N`; the last one
/// given, as Triton takes it).
fn exit_timeout(args: &[String]) -> Option<Result<u32, String>> {
    let i = args
        .iter()
        .rposition(|a| a == "--exit-timeout-secs" || a.starts_with("--exit-timeout-secs="))?;
    let v = match args[i].split_once('=') {
        Some((_, v)) => v.to_string(),
        None => args.get(i + 1).cloned().unwrap_or_default(),
    };
    Some(v.parse::<u32>().map_err(|_| v))
}

fn drain_section(
    cx: &Ctx,
    task: &TaskSection,
    network: &NetworkSection,
    spot: bool,
) -> Result<Drain, SpecError> {
    let span = |s: &S<u32>| s.as_ref().map(|s| s.span()).unwrap_or(0..0);
    let stop = val(&task.stop_timeout_seconds).unwrap_or(60);
    if !(2..=120).contains(&stop) {
        return Err(cx.err(
            span(&task.stop_timeout_seconds),
            "task.stop_timeout_seconds",
            format!("{stop}: ECS allows 2-120 seconds between SIGTERM and SIGKILL"),
        ));
    }
    let dereg = val(&network.deregistration_delay_seconds).unwrap_or(30.min(stop - 1));
    if dereg >= stop {
        let at = if network.deregistration_delay_seconds.is_some() {
            span(&network.deregistration_delay_seconds)
        } else {
            span(&task.stop_timeout_seconds)
        };
        return Err(cx.err(at, "network.deregistration_delay_seconds", format!(
            "{dereg} s must be below task.stop_timeout_seconds ({stop} s): requests the load balancer let in just before the task left it must finish before Triton is stopped"
        )));
    }
    if spot && dereg + stop > 120 {
        return Err(cx.err(span(&task.stop_timeout_seconds), "task.stop_timeout_seconds", format!(
            "with compute.spot, network.deregistration_delay_seconds ({dereg} s) + task.stop_timeout_seconds ({stop} s) = {} s must fit in the 120 s of a Spot interruption notice", dereg + stop
        )));
    }
    let mut triton_args =
        val(&task.triton_args).unwrap_or_else(|| vec!["--strict-readiness=true".into()]);
    // Just under the stop timeout: the longest Triton can finish inferences before ECS kills it.
    let under_stop = stop.saturating_sub(5).max(1);
    match exit_timeout(&triton_args) {
        // Triton's own default (30 s) may be longer than the stop timeout: say it explicitly.
        None => triton_args.push(format!("--exit-timeout-secs={under_stop}")),
        Some(Ok(n)) if n < stop => {}
        Some(found) => {
            let shown = match found {
                Ok(n) => format!(
                    "{n} s is not below task.stop_timeout_seconds ({stop} s): ECS would kill Triton while it still finishes inferences; use {under_stop}"
                ),
                Err(v) => format!("'{v}' is not a number of seconds"),
            };
            let at = task.triton_args.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return Err(cx.err(
                at,
                "task.triton_args",
                format!("--exit-timeout-secs: {shown}"),
            ));
        }
    }
    Ok(Drain {
        deregistration_delay_seconds: dereg,
        stop_timeout_seconds: stop,
        triton_args,
    })
}

fn resolve(cx: &Ctx, s: Sections, environment: Option<&str>) -> Result<DeploymentSpec, SpecError> {
    let service = s.service.unwrap_or_default();
    let image = s.image.unwrap_or_default();
    let compute = s.compute.unwrap_or_default();
    let ami = s.ami.unwrap_or_default();
    let task = s.task.unwrap_or_default();
    let storage = s.storage.unwrap_or_default();
    let network = s.network.unwrap_or_default();
    let autoscaling = s.autoscaling.unwrap_or_default();

    let (name, cluster) = service_section(cx, &service, &image)?;
    let c = compute_section(cx, &compute, &cluster)?;
    let bake = bake_section(cx, &ami, &compute, &c)?;
    let t = task_section(cx, &task, &c.instance_type)?;
    let (holds, mount_path) = storage_section(cx, &storage)?;
    let n = network_section(cx, &network, image.model_repository.is_some())?;
    let a = autoscaling_section(cx, &autoscaling, &task, &compute, &c, &t)?;
    let spot = val(&compute.spot).unwrap_or(false);
    let d = drain_section(cx, &task, &network, spot)?;
    let on_demand_base = val(&compute.on_demand_base).unwrap_or(0);
    if on_demand_base > 0 && (!spot || on_demand_base > c.max_instances) {
        return Err(cx.err(
            compute.on_demand_base.as_ref().expect("set").span(),
            "compute.on_demand_base",
            format!(
                "{on_demand_base}: on-demand hosts before Spot ones need compute.spot = true and at most max_instances ({})",
                c.max_instances
            ),
        ));
    }
    Ok(DeploymentSpec {
        service: name,
        cluster,
        region: val(&service.region),
        image_uri: val(&image.uri),
        image_repository: val(&image.repository),
        model_repository: val(&image.model_repository),
        instance_type: c.instance_type,
        instance_types: c.instance_types,
        ami: c.ami,
        bake,
        min_instances: c.min_instances,
        max_instances: c.max_instances,
        target_capacity: c.target_capacity,
        spot,
        on_demand_base,
        root_volume_gib: c.root_volume_gib,
        instance_warmup_seconds: val(&compute.instance_warmup_seconds).unwrap_or(300),
        max_scaling_step: val(&compute.max_scaling_step).unwrap_or(2),
        gpus: t.gpus,
        cpu: t.cpu,
        memory_mib: t.memory_mib,
        shm_size_mib: val(&task.shm_size_mib).unwrap_or(1024),
        triton_args: d.triton_args,
        desired_count: a.desired_count,
        health_check_grace_seconds: val(&task.health_check_grace_seconds).unwrap_or(600),
        run_result: val(&task.run_result),
        stop_timeout_seconds: d.stop_timeout_seconds,
        minimum_healthy_percent: t.minimum_healthy_percent,
        maximum_percent: t.maximum_percent,
        efs: val(&storage.efs).unwrap_or(true),
        efs_mount_path: mount_path,
        efs_uid: val(&storage.uid).unwrap_or(1000),
        efs_gid: val(&storage.gid).unwrap_or(1000),
        efs_holds: holds,
        vpc_id: val(&network.vpc_id),
        subnets: n.subnets,
        internet_facing: n.internet_facing,
        allowed_cidrs: n.allowed_cidrs,
        listener_port: n.listener_port,
        certificate_arn: n.certificate_arn,
        deregistration_delay_seconds: d.deregistration_delay_seconds,
        route: n.route,
        hostname: n.hostname,
        path_prefix: n.path_prefix,
        grpc: n.grpc,
        min_tasks: a.min_tasks,
        max_tasks: a.max_tasks,
        target_requests_per_task: val(&autoscaling.target_requests_per_task),
        bench_result: val(&autoscaling.bench_result),
        cpu_target: val(&autoscaling.cpu_target),
        // GPU tasks are slow to start: scale out quickly, in slowly.
        scale_in_cooldown_seconds: val(&autoscaling.scale_in_cooldown_seconds).unwrap_or(300),
        scale_out_cooldown_seconds: val(&autoscaling.scale_out_cooldown_seconds).unwrap_or(60),
        enable_exec: val(&task.enable_exec).unwrap_or(false),
        environment: environment.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<DeploymentSpec, SpecError> {
        parse(Path::new("triton-deploy.toml"), src, None)
    }

    #[test]
    fn the_drain_order_holds_by_default_and_a_spec_that_breaks_it_is_refused_by_key() {
        let s = p("[service]\nname = \"clf\"\n").unwrap();
        assert_eq!(
            (s.deregistration_delay_seconds, s.stop_timeout_seconds),
            (30, 60)
        );
        assert!(
            s.triton_args
                .contains(&"--exit-timeout-secs=55".to_string())
        );
        // A shorter stop timeout moves Triton's exit timeout under it.
        let s = p("[service]\nname = \"clf\"\n[task]\nstop_timeout_seconds = 20\n[network]\nderegistration_delay_seconds = 10\n").unwrap();
        assert!(
            s.triton_args
                .contains(&"--exit-timeout-secs=15".to_string()),
            "{:?}",
            s.triton_args
        );
        let e = p("[service]\nname = \"clf\"\n[task]\nstop_timeout_seconds = 40\n[network]\nderegistration_delay_seconds = 40\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (6, "network.deregistration_delay_seconds")
        );
        assert!(
            e.message.contains("below task.stop_timeout_seconds (40 s)"),
            "{}",
            e.message
        );
        let e = p("[service]\nname = \"clf\"\n[task]\nstop_timeout_seconds = 300\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "task.stop_timeout_seconds"));
        let e = p(
            "[service]\nname = \"clf\"\n[task]\ntriton_args = [\"--exit-timeout-secs\", \"90\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "task.triton_args");
        assert!(
            e.message
                .contains("90 s is not below task.stop_timeout_seconds (60 s)"),
            "{}",
            e.message
        );
        let e = p("[service]\nname = \"clf\"\n[compute]\nspot = true\n[task]\nstop_timeout_seconds = 100\n").unwrap_err();
        assert!(
            e.message.contains("120 s of a Spot interruption notice"),
            "{}",
            e.message
        );
        let e = p("[service]\nname = \"clf\"\n[compute]\non_demand_base = 1\n").unwrap_err();
        assert_eq!(e.key, "compute.on_demand_base");
        assert!(
            p("[service]\nname = \"clf\"\n[compute]\nspot = true\non_demand_base = 1\n").is_ok()
        );
    }

    #[test]
    fn a_baked_ami_is_the_cluster_s_parameter_and_the_bake_settings_are_checked() {
        let s = p("[service]\nname = \"a\"\ncluster = \"gpus\"\n[compute]\nami = \"baked\"\nfast_snapshot_restore = [\"us-east-1a\"]\n").unwrap();
        assert_eq!(s.ami, Ami::Baked("/triton-deploy/gpus/ami".into()));
        assert_eq!(s.ami.parameter(), Some("/triton-deploy/gpus/ami"));
        assert_eq!(s.bake.base, Ami::SsmParameter(Ami::AL2023_GPU.into()));
        assert_eq!(s.bake.instance_type, "g5.xlarge");
        assert_eq!((s.bake.volume_iops, s.bake.volume_throughput), (3000, 250));
        assert_eq!(s.bake.preread_timeout_seconds, 900);
        assert_eq!(s.bake.fast_snapshot_restore, ["us-east-1a"]);
        let s = p("[service]\nname = \"a\"\n[ami]\nbase = \"al2-gpu\"\nsubnet = \"subnet-0a\"\ninstance_type = \"m6i.large\"\n").unwrap();
        assert_eq!(s.bake.base, Ami::SsmParameter(Ami::AL2_GPU.into()));
        assert_eq!(s.bake.subnet.as_deref(), Some("subnet-0a"));
        assert_eq!(s.bake.instance_type, "m6i.large");
        for (src, key, says) in [
            (
                "[compute]\nfast_snapshot_restore = [\"us-east-1a\"]\n",
                "compute.fast_snapshot_restore",
                "only for a baked AMI",
            ),
            (
                "[compute]\nami = \"baked\"\nfast_snapshot_restore = [\"east\"]\n",
                "compute.fast_snapshot_restore",
                "'east' is not an availability zone",
            ),
            (
                "[ami]\nbase = \"baked\"\n",
                "ami.base",
                "use al2023-gpu, al2-gpu",
            ),
            ("[ami]\nsubnet = \"vpc-1\"\n", "ami.subnet", "subnet ID"),
            (
                "[ami]\nvolume_iops = 20000\n",
                "ami.volume_iops",
                "3000-16000",
            ),
            (
                "[ami]\nvolume_throughput = 1000\n",
                "ami.volume_throughput",
                "at most 750 MiB/s",
            ),
            (
                "[ami]\npreread_timeout_seconds = 7200\n",
                "ami.preread_timeout_seconds",
                "at most 3600",
            ),
            ("[ami]\nbogus = 1\n", "bogus", "unknown field"),
        ] {
            let e = p(&format!("[service]\nname = \"a\"\n{src}")).unwrap_err();
            assert_eq!(e.key, key, "{src}: {e}");
            assert!(e.message.contains(says), "{src}: {e}");
            assert!(e.line >= 3, "{src}: {e}");
        }
    }

    #[test]
    fn a_minimal_spec_gets_defaults() {
        let s = p("[service]\nname = \"classifier\"\n").unwrap();
        assert_eq!(s.cluster, "classifier-gpu");
        assert_eq!(s.instance_type, "g5.xlarge");
        assert_eq!(s.ami, Ami::SsmParameter(Ami::AL2023_GPU.into()));
        assert_eq!((s.gpus, s.shm_size_mib, s.listener_port), (1, 1024, 80));
        assert!(s.efs);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e =
            p("[service]\nname = \"x\"\n[compute]\ninstance_typ = \"g5.xlarge\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "instance_typ"));
        assert!(e.message.contains("unknown field `instance_typ`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("triton-deploy.toml:4:1: instance_typ: unknown field"),
            "{e}"
        );

        let e = p("[service]\nname = \"x\"\n[task]\ngpus = \"two\"\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("invalid type"), "{e}");

        let e =
            p("[service]\nname = \"x\"\n[network]\nvpc_id = \"vpc-1\"\nsubnets = [\"subnet-a\"]\n")
                .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "network.subnets"));

        let e =
            p("[service]\nname = \"x\"\n[compute]\ninstance_type = \"m5.large\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "compute.instance_type"));

        let e = p("[service]\nname = \"x\"\n[compute]\ntarget_capacity = 150\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (4, 19, "compute.target_capacity")
        );
    }

    #[test]
    fn several_instance_types_need_the_same_gpu_count() {
        let s = p("[service]\nname = \"x\"\n[compute]\ninstance_types = [\"g5.xlarge\", \"g6.xlarge\", \"g5.xlarge\"]\n").unwrap();
        assert_eq!(s.instance_type, "g5.xlarge");
        assert_eq!(s.instance_types, ["g5.xlarge", "g6.xlarge"]);
        let s = p("[service]\nname = \"x\"\n[compute]\ninstance_type = \"g6.xlarge\"\ninstance_types = [\"g5.2xlarge\"]\n").unwrap();
        assert_eq!(s.instance_types, ["g6.xlarge", "g5.2xlarge"]);
        let s = p("[service]\nname = \"x\"\n").unwrap();
        assert_eq!(s.instance_types, ["g5.xlarge"]);
        let e = p("[service]\nname = \"x\"\n[compute]\ninstance_types = [\"g5.xlarge\", \"g5.12xlarge\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "compute.instance_types"));
        assert!(e.message.contains("g5.12xlarge 4"), "{e}");
        let e =
            p("[service]\nname = \"x\"\n[compute]\ninstance_types = [\"m5.large\"]\n").unwrap_err();
        assert!(e.message.contains("not a GPU instance type"), "{e}");
        let e = p("[service]\nname = \"x\"\n[compute]\ninstance_types = []\n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn the_route_defaults_to_the_models_of_the_repository_and_is_checked() {
        let s = p("[service]\nname = \"x\"\n").unwrap();
        assert_eq!(s.route, RouteKind::All, "no model repository: every path");
        let s = p("[service]\nname = \"x\"\n[image]\nmodel_repository = \"m\"\n").unwrap();
        assert_eq!(s.route, RouteKind::Models);
        let s = p("[service]\nname = \"x\"\n[image]\nmodel_repository = \"m\"\n[network]\nroute = \"all\"\n")
            .unwrap();
        assert_eq!(s.route, RouteKind::All);
        let e = p("[service]\nname = \"x\"\n[network]\nroute = \"models\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "network.route"));
        assert!(e.message.contains("names none"), "{e}");
        let e = p("[service]\nname = \"x\"\n[network]\nroute = \"hosts\"\n").unwrap_err();
        assert!(e.message.contains("'hosts': one of"), "{e}");
        let e = p("[service]\nname = \"x\"\n[network]\nroute = \"host\"\n").unwrap_err();
        assert!(e.message.contains("sets none"), "{e}");
        let s = p(
            "[service]\nname = \"x\"\n[network]\nroute = \"host\"\nhostname = \"A.example.com\"\n",
        )
        .unwrap();
        assert_eq!(
            (s.route, s.hostname.as_deref()),
            (RouteKind::Host, Some("a.example.com"))
        );
        for (prefix, why) in [
            ("text", "starts with '/'"),
            ("/text/", "no trailing"),
            ("/a//b", "none empty"),
            ("/a*", "wildcards"),
            ("/a/../b", "'..'"),
            ("/v2", "/v2"),
        ] {
            let e = p(&format!(
                "[service]\nname = \"x\"\n[network]\nroute = \"path\"\npath_prefix = \"{prefix}\"\n"
            ))
            .unwrap_err();
            assert_eq!(
                (e.line, e.key.as_str()),
                (5, "network.path_prefix"),
                "{prefix}"
            );
            assert!(e.message.contains(why), "{prefix}: {e}");
        }
        let e = p("[service]\nname = \"x\"\n[network]\npath_prefix = \"/a\"\n").unwrap_err();
        assert!(e.message.contains("needs network.route"), "{e}");
        let s = p(
            "[service]\nname = \"x\"\n[network]\nroute = \"path\"\npath_prefix = \"/a/b-c_1.2\"\n",
        )
        .unwrap();
        assert_eq!(s.path_prefix.as_deref(), Some("/a/b-c_1.2"));
        for bad in ["example", "a..b.com", "-a.example.com", "a_b.example.com"] {
            let e = p(&format!(
                "[service]\nname = \"x\"\n[network]\nhostname = \"{bad}\"\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, "network.hostname", "{bad}");
        }
    }

    #[test]
    fn gpu_counts_and_rolling_room_are_checked_for_known_instance_types() {
        let e = p("[service]\nname = \"x\"\n[task]\ngpus = 2\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "task.gpus"));
        assert!(e.message.contains("a g5.xlarge has 1"), "{e}");
        assert!(p("[service]\nname = \"x\"\n[compute]\ninstance_type = \"g5.12xlarge\"\n[task]\ngpus = 2\n").is_ok());
        let e = p(
            "[service]\nname = \"x\"\n[compute]\nmax_instances = 2\n[autoscaling]\nmax_tasks = 2\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "compute.max_instances"));
        assert!(e.message.contains("raise max_instances to 3"), "{e}");
        assert!(p("[service]\nname = \"x\"\n[compute]\nmax_instances = 2\n[autoscaling]\nmax_tasks = 2\n[task]\nminimum_healthy_percent = 50\n").is_ok());
        // Defaults always leave room.
        let s = p("[service]\nname = \"x\"\n[compute]\nmax_instances = 5\n").unwrap();
        assert_eq!(s.max_tasks, 4);
    }

    #[test]
    fn environments_override_the_base() {
        let src = "[service]\nname = \"x\"\n[compute]\nmax_instances = 2\n[env.prod.compute]\nmax_instances = 8\nspot = false\n[env.dev.compute]\nspot = true\n";
        let base = parse(Path::new("t.toml"), src, None).unwrap();
        let prod = parse(Path::new("t.toml"), src, Some("prod")).unwrap();
        let dev = parse(Path::new("t.toml"), src, Some("dev")).unwrap();
        assert_eq!(
            (base.max_instances, prod.max_instances, dev.max_instances),
            (2, 8, 2)
        );
        assert!(dev.spot && !prod.spot);
        let e = parse(Path::new("t.toml"), src, Some("qa")).unwrap_err();
        assert!(e.message.contains("has: dev, prod"), "{e}");
        let e = parse(
            Path::new("t.toml"),
            "[service]\nname=\"x\"\n[env.prod.compute]\nmax_instancez = 3\n",
            Some("prod"),
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
    }
}
