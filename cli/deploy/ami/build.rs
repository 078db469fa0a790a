//! `ami build`: resolve what to bake (the base AMI behind its parameter, the image by digest),
//! say whether the AMI in the cluster's parameter already holds it (`--if-changed`), render the
//! template, run Packer, read the AMI from its manifest and publish it to
//! `/triton-deploy/<cluster>/ami`, which `compute.ami = "baked"` launch templates resolve.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::cfn::Cfn;
use triton_deploy_aws::ec2::{Ec2, Image};
use triton_deploy_aws::ssm::Ssm;
use url::Url;

use super::manifest;
use super::packer::{Packer, PackerError};
use super::template::{self, Dialect, Inputs, Provision, tags};
use crate::deploy::error::DeployError;
use crate::deploy::render::cloudformation;
use crate::deploy::service::{self, ServiceError};
use crate::deploy::spec::{Ami, DeploymentSpec};
use crate::output::progress::Progress;
use crate::package::image::ImageName;
use crate::triton::model_repo::ModelRepo;

/// What `ami build` (and `render packer`) is given besides the spec.
#[derive(Debug, Clone, Default)]
pub struct BakeSettings {
    /// `--image`: bake this image instead of the spec's newest.
    pub image: Option<String>,
    /// `--registry-endpoint`: the build instance pulls through this registry host.
    pub registry_endpoint: Option<Url>,
    /// The directory relative paths of the spec start from.
    pub spec_dir: PathBuf,
    pub aws: AwsOptions,
}

/// Everything resolved that the template is rendered from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub region: String,
    pub source_ami: String,
    pub source_ami_parameter: Option<String>,
    /// The image's reference in its repository, by digest.
    pub image: String,
    /// The reference the build instance pulls (through `--registry-endpoint` if given).
    pub pull: String,
    pub registry: String,
    pub image_digest: String,
    pub models: Vec<String>,
}

/// The AMI in the cluster's parameter and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Baked {
    pub ami: String,
    pub name: String,
    pub created: String,
    pub source_ami: Option<String>,
    pub image_digest: Option<String>,
    pub models: Option<String>,
}

impl Baked {
    fn of(image: Image) -> Baked {
        Baked {
            source_ami: image.tags.get(tags::SOURCE_AMI).cloned(),
            image_digest: image.tags.get(tags::DIGEST).cloned(),
            models: image.tags.get(tags::MODELS).cloned(),
            ami: image.id,
            name: image.name,
            created: image.created,
        }
    }
}

/// Why the baked AMI is behind what the spec would bake now; empty when it is current.
pub fn behind(baked: Option<&Baked>, now: &Resolved) -> Vec<String> {
    behind_of(baked, &now.source_ami, Some(&now.image_digest))
}

/// [`behind`] on the base AMI and the image digest (`None`: not known).
fn behind_of(baked: Option<&Baked>, source_ami: &str, image_digest: Option<&str>) -> Vec<String> {
    let Some(b) = baked else {
        return vec!["no AMI is baked for the cluster yet".into()];
    };
    let mut why = Vec::new();
    if b.source_ami.as_deref() != Some(source_ami) {
        why.push(format!(
            "the base AMI is now {} (baked on {})",
            source_ami,
            b.source_ami.as_deref().unwrap_or("an unrecorded AMI")
        ));
    }
    if let Some(digest) = image_digest
        && b.image_digest.as_deref() != Some(digest)
    {
        why.push(format!(
            "the newest image is {} (baked: {})",
            digest,
            b.image_digest.as_deref().unwrap_or("unrecorded")
        ));
    }
    why
}

fn digest_of(reference: &str) -> Option<&str> {
    reference
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| d.starts_with("sha256:"))
}

/// The models of the spec's model repository, when it names one that can be read.
fn models(spec: &DeploymentSpec, dir: &Path) -> Vec<String> {
    let Some(repo) = &spec.model_repository else {
        return Vec::new();
    };
    ModelRepo::read(&dir.join(repo), None)
        .map(|r| r.models.into_iter().map(|m| m.name).collect())
        .unwrap_or_default()
}

/// The base AMI's ID (and the parameter it came from).
async fn base_ami(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<(String, Option<String>), DeployError> {
    match &spec.bake.base {
        Ami::SsmParameter(p) | Ami::Baked(p) => {
            let id = Ssm::new(config).get(p).await?.ok_or_else(|| {
                DeployError::Preflight(format!(
                    "ami.base: the parameter {p} does not exist in this region"
                ))
            })?;
            Ok((id, Some(p.clone())))
        }
        Ami::Id(id) => {
            if !Ec2::new(config).image_exists(id).await? {
                return Err(DeployError::Preflight(format!(
                    "ami.base: AMI {id} does not exist in this region"
                )));
            }
            Ok((id.clone(), None))
        }
    }
}

/// Resolves what the spec bakes now: the base AMI and the image by digest. An image that is not
/// in ECR (and no `--registry-endpoint`) is refused: the build instance logs in with its role.
pub async fn resolve(
    spec: &DeploymentSpec,
    s: &BakeSettings,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<Resolved, DeployError> {
    let image = service::resolve_image(spec, s.image.as_deref(), config).await?;
    if !image.checked && s.registry_endpoint.is_none() {
        return Err(ServiceError::Image(format!(
            "{} is not an ECR image: the build instance pulls with its role from ECR (push it with `triton-deploy push`)",
            image.uri
        ))
        .into());
    }
    let digest = digest_of(&image.uri)
        .ok_or_else(|| {
            ServiceError::Image(format!(
                "{} is not pinned by digest: give --image REPOSITORY@sha256:...",
                image.uri
            ))
        })?
        .to_string();
    let (pull, registry) = match &s.registry_endpoint {
        Some(u) => {
            let pull = ImageName::through_endpoint(&image.uri, u).map_err(DeployError::Usage)?;
            let host = pull.split('/').next().unwrap_or_default().to_string();
            (pull, host)
        }
        None => (
            image.uri.clone(),
            image.uri.split('/').next().unwrap_or_default().to_string(),
        ),
    };
    let (source_ami, source_ami_parameter) = base_ami(spec, config).await?;
    Ok(Resolved {
        region: triton_deploy_aws::region_of(config),
        source_ami,
        source_ami_parameter,
        image: image.uri,
        pull,
        registry,
        image_digest: digest,
        models: models(spec, &s.spec_dir),
    })
}

/// The baked AMI as `status` shows it: what it holds and why it is behind (empty: current).
#[derive(Debug, Clone, Serialize)]
pub struct BakedStatus {
    #[serde(flatten)]
    pub baked: Option<Baked>,
    pub parameter: String,
    pub behind: Vec<String>,
}

/// [`BakedStatus`] of the spec's cluster: the base AMI behind its parameter and the spec's image
/// now, against the parameter's AMI. What cannot be looked up is said in `behind`.
pub async fn status(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<BakedStatus, DeployError> {
    let current = baked(spec, config).await?;
    let (source, _) = base_ami(spec, config).await?;
    let digest = match service::resolve_image(spec, None, config).await {
        Ok(image) => digest_of(&image.uri).map(str::to_string),
        Err(_) => None,
    };
    let mut why = behind_of(current.as_ref(), &source, digest.as_deref());
    if digest.is_none() && current.is_some() {
        why.push(
            "the spec's image is not known by digest: whether it is baked is not known".into(),
        );
    }
    Ok(BakedStatus {
        baked: current,
        parameter: Ami::baked_parameter(&spec.cluster),
        behind: why,
    })
}

/// With `compute.ami = "baked"`: why `image` is not on the baked AMI's disk (new hosts then pull
/// it), or `None` when it is.
pub async fn not_baked(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
    image: &str,
) -> Result<Option<String>, DeployError> {
    let Some(b) = baked(spec, config).await? else {
        return Ok(None);
    };
    let digest = digest_of(image);
    if digest.is_some() && digest == b.image_digest.as_deref() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the baked AMI {} holds {}, not {image}: new hosts pull the image (`triton-deploy ami build` bakes it)",
        b.ami,
        b.image_digest.as_deref().unwrap_or("an unrecorded image")
    )))
}

/// The AMI in the cluster's parameter now, and what it holds.
pub async fn baked(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<Option<Baked>, DeployError> {
    let Some(ami) = Ssm::new(config)
        .get(&Ami::baked_parameter(&spec.cluster))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(match Ec2::new(config).image(&ami).await? {
        Some(image) => Baked::of(image),
        // Deregistered since: nothing is known of what it held.
        None => Baked {
            ami,
            name: String::new(),
            created: String::new(),
            source_ami: None,
            image_digest: None,
            models: None,
        },
    }))
}

/// The build instance's profile: `ami.instance_profile`, else the cluster stack's (its role can
/// pull from ECR).
pub async fn instance_profile(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<String, DeployError> {
    if let Some(p) = &spec.bake.instance_profile {
        return Ok(p.clone());
    }
    let name = cloudformation::cluster_stack_name(spec);
    Cfn::new(config)
        .describe(&name)
        .await?
        .and_then(|s| s.value("InstanceProfile", "InstanceProfile"))
        .ok_or_else(|| {
            DeployError::Preflight(format!(
                "the build instance needs a profile that can pull from ECR: set ami.instance_profile, or `rollout` the cluster ({name}) first and its hosts' profile is used"
            ))
        })
}

/// The template's inputs.
pub fn inputs<'a>(
    spec: &'a DeploymentSpec,
    r: &Resolved,
    instance_profile: String,
    provision: Provision,
    dialect: Dialect,
) -> Inputs<'a> {
    Inputs {
        spec,
        region: r.region.clone(),
        source_ami: r.source_ami.clone(),
        source_ami_parameter: r.source_ami_parameter.clone(),
        image: r.pull.clone(),
        image_digest: r.image_digest.clone(),
        registry: r.registry.clone(),
        models: r.models.clone(),
        instance_profile,
        provision,
        dialect,
    }
}

/// Writes the template's files into `dir` (the script executable).
pub fn write(dir: &Path, files: &[(&'static str, String)]) -> Result<Vec<PathBuf>, DeployError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DeployError::Failed(format!("creating {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| DeployError::Failed(format!("writing {}: {e}", path.display())))?;
        if *name == template::SCRIPT_FILE {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
        }
        written.push(path);
    }
    Ok(written)
}

/// `ami build`'s own settings.
#[derive(Debug, Clone, Default)]
pub struct BuildSettings {
    pub bake: BakeSettings,
    /// Build only when the base AMI or the image differ from what the parameter's AMI holds.
    pub if_changed: bool,
    /// Keep the template here (default: a temporary directory, removed after).
    pub out: Option<PathBuf>,
    /// The Packer to run (default: `packer` on PATH).
    pub packer: Option<PathBuf>,
    /// Run the provisioning steps on this machine, with the host's paths under this directory
    /// (for an EC2 stand-in that launches no machine).
    pub provision_here: Option<PathBuf>,
}

/// What `ami build` did.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub cluster: String,
    /// The SSM parameter the AMI is published to.
    pub parameter: String,
    /// Whether Packer ran (false: `--if-changed` found the AMI current).
    pub built: bool,
    /// The AMI in the parameter now.
    pub ami: String,
    /// The AMI the parameter held before, if another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_ami: Option<String>,
    /// Why it was built (or, not built, empty).
    pub reasons: Vec<String>,
    pub source_ami: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ami_parameter: Option<String>,
    pub image: String,
    pub image_digest: String,
    pub models: Vec<String>,
    /// The Packer that ran and the template dialect it read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packer: Option<String>,
    /// Where the template was kept (`--out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_dir: Option<PathBuf>,
    /// Zones with Fast Snapshot Restore on for the AMI's snapshots.
    pub fast_snapshot_restore: Vec<String>,
    /// What went wrong after the AMI was published (it is in use regardless).
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// Runs `ami build`: nothing runs before Packer, the spec and the image are known good.
pub async fn build(
    spec: DeploymentSpec,
    s: &BuildSettings,
    progress: &Progress,
) -> Result<BuildReport, DeployError> {
    let started = Instant::now();
    let packer = Packer::find(s.packer.as_deref()).map_err(packer_error)?;
    let config = triton_deploy_aws::load_config(&s.bake.aws).await;
    progress.spin("resolving the base AMI and the image");
    let now = resolve(&spec, &s.bake, &config).await?;
    let current = baked(&spec, &config).await?;
    progress.stop_spinner();
    let reasons = behind(current.as_ref(), &now);
    let parameter = Ami::baked_parameter(&spec.cluster);
    let mut report = BuildReport {
        cluster: spec.cluster.clone(),
        parameter: parameter.clone(),
        built: false,
        ami: current.as_ref().map(|b| b.ami.clone()).unwrap_or_default(),
        previous_ami: None,
        reasons: reasons.clone(),
        source_ami: now.source_ami.clone(),
        source_ami_parameter: now.source_ami_parameter.clone(),
        image: now.image.clone(),
        image_digest: now.image_digest.clone(),
        models: now.models.clone(),
        packer: None,
        template_dir: None,
        fast_snapshot_restore: Vec::new(),
        warnings: Vec::new(),
        seconds: 0.0,
    };
    if s.if_changed && reasons.is_empty() {
        report.reasons.clear();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let profile = instance_profile(&spec, &config).await?;
    let provision = match &s.provision_here {
        Some(root) => Provision::Here {
            root: root.display().to_string(),
        },
        None => Provision::OnInstance,
    };
    let files = template::render(&inputs(&spec, &now, profile, provision, packer.dialect()));
    let temp;
    let dir = match &s.out {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("triton-deploy-ami-")
                .tempdir()
                .map_err(|e| DeployError::Failed(format!("a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    // A manifest of an earlier run in --out must not be read as this run's.
    let _ = std::fs::remove_file(dir.join(template::MANIFEST_FILE));
    write(&dir, &files)?;
    report.packer = Some(format!(
        "{} ({})",
        packer.version_string(),
        match packer.dialect() {
            Dialect::Current => "amazon plugin",
            Dialect::Packer16 => "built-in amazon builder; no IMDS settings on the build instance",
        }
    ));
    progress.line(format!(
        "baking {} onto {} with Packer {}",
        now.image,
        now.source_ami,
        packer.version_string()
    ));
    packer.init(&dir, progress).await.map_err(packer_error)?;
    let mut env = vec![
        ("AWS_REGION".to_string(), now.region.clone()),
        ("AWS_DEFAULT_REGION".to_string(), now.region.clone()),
    ];
    if let Some(p) = &s.bake.aws.profile {
        env.push(("AWS_PROFILE".into(), p.clone()));
    }
    let mut vars = Vec::new();
    if let Some(endpoint) = std::env::var("AWS_ENDPOINT_URL_EC2")
        .ok()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty())
    {
        vars.push(("ec2_endpoint".to_string(), endpoint));
    }
    packer
        .build(&dir, &vars, &env, progress)
        .await
        .map_err(packer_error)?;
    let manifest_path = dir.join(template::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        DeployError::Failed(format!(
            "Packer finished but wrote no manifest ({}): {e}",
            manifest_path.display()
        ))
    })?;
    let ami = manifest::ami(&text, &now.region).map_err(DeployError::Failed)?;

    let mut tags = BTreeMap::new();
    tags.insert(tags::SOURCE_AMI.to_string(), now.source_ami.clone());
    tags.insert(tags::DIGEST.to_string(), now.image_digest.clone());
    tags.insert(tags::CLUSTER.to_string(), spec.cluster.clone());
    tags.insert(
        tags::VERSION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    Ssm::new(&config)
        .put_ami(
            &parameter,
            &ami,
            &format!(
                "GPU AMI with {} baked in, on {} (triton-deploy ami build)",
                now.image_digest, now.source_ami
            ),
            &tags,
        )
        .await?;
    progress.line(format!("published {ami} to {parameter}"));
    report.previous_ami = current
        .as_ref()
        .map(|b| b.ami.clone())
        .filter(|a| *a != ami);
    report.ami = ami.clone();
    report.built = true;
    if s.out.is_some() {
        report.template_dir = Some(dir.clone());
    }
    let previous = report.previous_ami.clone();
    fast_snapshot_restore(&spec, &config, &ami, previous.as_deref(), &mut report).await;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Fast Snapshot Restore on the new AMI's snapshots in the spec's zones, and off on the previous
/// AMI's (it is billed per snapshot and zone-hour). Failures are warnings: the AMI is published.
async fn fast_snapshot_restore(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
    ami: &str,
    previous: Option<&str>,
    report: &mut BuildReport,
) {
    let zones = &spec.bake.fast_snapshot_restore;
    if zones.is_empty() {
        return;
    }
    let ec2 = Ec2::new(config);
    match ec2.image(ami).await {
        Ok(Some(img)) => match ec2.fast_snapshot_restore(true, &img.snapshots, zones).await {
            Ok(()) => report.fast_snapshot_restore = zones.clone(),
            Err(e) => report.warnings.push(format!(
                "Fast Snapshot Restore not turned on for {ami} ({}): {e}",
                zones.join(", ")
            )),
        },
        Ok(None) => report.warnings.push(format!(
            "{ami} is not described by EC2: Fast Snapshot Restore not turned on"
        )),
        Err(e) => report.warnings.push(e.to_string()),
    }
    if let Some(prev) = previous
        && let Ok(Some(img)) = ec2.image(prev).await
        && let Err(e) = ec2
            .fast_snapshot_restore(false, &img.snapshots, zones)
            .await
    {
        report.warnings.push(format!(
            "Fast Snapshot Restore is still on for the previous AMI {prev}'s snapshots, and billed: {e}"
        ));
    }
}

fn packer_error(e: PackerError) -> DeployError {
    match e {
        PackerError::Interrupted => DeployError::Service(ServiceError::Interrupted),
        PackerError::Unusable(m) => DeployError::Preflight(m),
        e @ PackerError::Failed { .. } => DeployError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(source: &str, digest: &str) -> Resolved {
        Resolved {
            region: "us-east-1".into(),
            source_ami: source.into(),
            source_ami_parameter: None,
            image: format!("r/x@{digest}"),
            pull: format!("r/x@{digest}"),
            registry: "r".into(),
            image_digest: digest.into(),
            models: vec![],
        }
    }

    fn baked(source: &str, digest: &str) -> Baked {
        Baked {
            ami: "ami-9".into(),
            name: String::new(),
            created: String::new(),
            source_ami: Some(source.into()),
            image_digest: Some(digest.into()),
            models: None,
        }
    }

    #[test]
    fn the_baked_ami_is_behind_when_the_base_or_the_image_moved() {
        let now = resolved("ami-2", "sha256:b");
        assert!(behind(Some(&baked("ami-2", "sha256:b")), &now).is_empty());
        let why = behind(Some(&baked("ami-1", "sha256:b")), &now);
        assert_eq!(why, ["the base AMI is now ami-2 (baked on ami-1)"]);
        let why = behind(Some(&baked("ami-2", "sha256:a")), &now);
        assert_eq!(why, ["the newest image is sha256:b (baked: sha256:a)"]);
        assert_eq!(behind(Some(&baked("ami-1", "sha256:a")), &now).len(), 2);
        assert_eq!(behind(None, &now), ["no AMI is baked for the cluster yet"]);
    }

    #[test]
    fn only_digests_count() {
        assert_eq!(digest_of("r/x@sha256:ab"), Some("sha256:ab"));
        assert_eq!(digest_of("r/x:v1"), None);
    }
}
