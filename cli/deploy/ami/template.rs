//! The Packer template of a baked AMI (HCL2): an `amazon-ebs` source on the spec's GPU base AMI,
//! one provisioning script that pulls the image by digest with the instance's role, and a
//! `manifest` post-processor that says which AMI came out. Pure: [`render`] returns the files,
//! the caller writes them and runs Packer.
//!
//! The files of a template directory (Packer reads every `*.pkr.hcl` in it):
//! - `plugins.pkr.hcl` — `packer { required_plugins }` for Packer ≥ 1.7 (`packer init` installs
//!   the amazon plugin). Kept apart because Packer 1.6, which has the amazon builder built in,
//!   rejects that block.
//! - `triton-ami.pkr.hcl` — variables (their defaults are the values resolved when rendering:
//!   the base AMI the SSM parameter held, the image digest), the source and the build.
//! - `provision.sh` — the steps on the build instance.

use crate::deploy::render::hcl::{Body, V, block, e, s};
use crate::deploy::spec::DeploymentSpec;

/// The Packer the template is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Packer ≥ 1.7 with the amazon plugin: the build instance and the AMI require IMDSv2.
    Current,
    /// Packer 1.6 (Debian's 1.6.6): the amazon builder built in, no `required_plugins`, no
    /// `metadata_options` or `imds_support` (the build instance gets the base AMI's default:
    /// IMDSv2 only on Amazon Linux 2023).
    Packer16,
}

/// Where the provisioning steps run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provision {
    /// On the build instance over SSH (what users run).
    OnInstance,
    /// On the machine running Packer, with no connection to the instance and the host's paths
    /// under `root`: the same script, runnable where an EC2 API stand-in launches no machine.
    Here { root: String },
}

/// What the template is rendered from: the spec and the values resolved for it.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub spec: &'a DeploymentSpec,
    pub region: String,
    /// The base AMI's ID.
    pub source_ami: String,
    /// The SSM parameter the base AMI was read from, if it came from one.
    pub source_ami_parameter: Option<String>,
    /// The image to pull, by digest.
    pub image: String,
    /// Its digest (`sha256:...`).
    pub image_digest: String,
    /// The registry host the build instance logs in to.
    pub registry: String,
    /// The models the image serves.
    pub models: Vec<String>,
    /// The build instance's profile (it must be able to pull from the repository).
    pub instance_profile: String,
    pub provision: Provision,
    pub dialect: Dialect,
}

/// The name of the plugins file, which only Packer ≥ 1.7 reads.
pub const PLUGINS_FILE: &str = "plugins.pkr.hcl";
/// The template proper.
pub const TEMPLATE_FILE: &str = "triton-ami.pkr.hcl";
/// The provisioning script.
pub const SCRIPT_FILE: &str = "provision.sh";
/// Where the `manifest` post-processor writes (relative to the template directory).
pub const MANIFEST_FILE: &str = "packer-manifest.json";

/// The AMI tags (also on its snapshot) that say what the AMI holds.
pub mod tags {
    pub const CLUSTER: &str = "triton-deploy:cluster";
    pub const SOURCE_AMI: &str = "triton-deploy:source-ami";
    pub const SOURCE_PARAMETER: &str = "triton-deploy:source-ami-parameter";
    pub const IMAGE: &str = "triton-deploy:image";
    pub const DIGEST: &str = "triton-deploy:image-digest";
    pub const MODELS: &str = "triton-deploy:models";
    pub const VERSION: &str = "triton-deploy:version";
}

/// A tag value within EC2's 256 characters: a long model list ends with how many are left out.
fn tag_value(v: &str) -> String {
    if v.chars().count() <= 256 {
        return v.to_string();
    }
    let mut out: String = v.chars().take(240).collect();
    let shown = out.matches(',').count();
    let total = v.matches(',').count() + 1;
    if let Some(cut) = out.rfind(',') {
        out.truncate(cut);
    }
    format!("{out},+{} more", total - shown)
}

/// The variables, each with the resolved value as its default: `packer build .` in the directory
/// builds what was rendered, and `-var` overrides one.
fn variables(i: &Inputs) -> Vec<(&'static str, &'static str, String)> {
    let spec = i.spec;
    vec![
        (
            "region",
            "The region the AMI is built in.",
            i.region.clone(),
        ),
        (
            "source_ami",
            "The GPU base AMI (resolved from source_ami_parameter when rendered).",
            i.source_ami.clone(),
        ),
        (
            "source_ami_parameter",
            "The SSM parameter the base AMI was read from (recorded on the AMI).",
            i.source_ami_parameter.clone().unwrap_or_default(),
        ),
        (
            "image",
            "The Triton image to bake in, by digest.",
            i.image.clone(),
        ),
        (
            "image_digest",
            "The image's digest (recorded on the AMI).",
            i.image_digest.clone(),
        ),
        (
            "registry",
            "The registry the build instance logs in to with its role.",
            i.registry.clone(),
        ),
        (
            "instance_type",
            "The build instance's type.",
            spec.bake.instance_type.clone(),
        ),
        (
            "subnet_id",
            "The build instance's subnet (empty: the default VPC's).",
            spec.bake.subnet.clone().unwrap_or_default(),
        ),
        (
            "iam_instance_profile",
            "The build instance's profile: it pulls the image from ECR.",
            i.instance_profile.clone(),
        ),
        (
            "cluster",
            "The ECS cluster the AMI is for.",
            spec.cluster.clone(),
        ),
        (
            "models",
            "The models the image serves (recorded on the AMI).",
            tag_value(&i.models.join(",")),
        ),
        (
            "tool_version",
            "The triton-deploy that rendered this template.",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "ec2_endpoint",
            "Another EC2 endpoint (a VPC endpoint, say); empty: the region's own.",
            String::new(),
        ),
    ]
}

fn var(name: &str) -> V {
    e(format!("var.{name}"))
}

/// The AMI's tags (also its snapshot's).
fn ami_tags() -> V {
    V::M(vec![
        ("Name".into(), e("local.ami_name")),
        (tags::CLUSTER.into(), var("cluster")),
        (tags::SOURCE_AMI.into(), var("source_ami")),
        (tags::SOURCE_PARAMETER.into(), var("source_ami_parameter")),
        (tags::IMAGE.into(), e("local.image_tag")),
        (tags::DIGEST.into(), var("image_digest")),
        (tags::MODELS.into(), var("models")),
        (tags::VERSION.into(), var("tool_version")),
    ])
}

/// The provisioner's environment: which image, where the host keeps the agent's files.
fn script_env(i: &Inputs) -> V {
    let (config, data) = match &i.provision {
        Provision::OnInstance => (
            "/etc/ecs/ecs.config".to_string(),
            "/var/lib/ecs/data".to_string(),
        ),
        Provision::Here { root } => (
            format!("{root}/etc/ecs/ecs.config"),
            format!("{root}/var/lib/ecs/data"),
        ),
    };
    V::L(vec![
        e("\"TD_REGISTRY=${var.registry}\""),
        e("\"TD_IMAGE=${var.image}\""),
        e("\"TD_DIGEST=${var.image_digest}\""),
        e("\"TD_REGION=${var.region}\""),
        s(format!("TD_ECS_CONFIG={config}")),
        s(format!("TD_ECS_DATA={data}")),
    ])
}

/// Renders the template's files: (file name, contents), in the order written.
pub fn render(i: &Inputs) -> Vec<(&'static str, String)> {
    let mut files = Vec::new();
    if i.dialect == Dialect::Current {
        files.push((PLUGINS_FILE, plugins()));
    }
    files.push((TEMPLATE_FILE, template(i)));
    files.push((SCRIPT_FILE, provision_script()));
    files
}

fn plugins() -> String {
    let mut o = String::from(
        "# Packer >= 1.7 reads this file; `packer init .` installs the amazon plugin.\n\n",
    );
    block(
        &mut o,
        "packer",
        &[],
        Body::default().a("required_version", s(">= 1.7.0")).b(
            "required_plugins",
            Body::default().a(
                "amazon",
                V::M(vec![
                    ("source".into(), s("github.com/hashicorp/amazon")),
                    ("version".into(), s(">= 1.2.0")),
                ]),
            ),
        ),
    );
    o
}

fn template(i: &Inputs) -> String {
    let spec = i.spec;
    let mut o = format!(
        "# A GPU AMI for ECS cluster {} with its Triton image on disk, rendered by triton-deploy {}.\n# `triton-deploy ami build` runs it and publishes the AMI to /triton-deploy/{}/ami; by hand:\n# `packer init . && packer build .` (Packer 1.6: `packer build .`).\n\n",
        spec.cluster,
        env!("CARGO_PKG_VERSION"),
        spec.cluster
    );
    for (name, description, default) in variables(i) {
        block(
            &mut o,
            "variable",
            &[name],
            Body::default()
                .a("type", e("string"))
                .a("description", s(description))
                .a("default", s(default)),
        );
    }
    block(
        &mut o,
        "locals",
        &[],
        Body::default()
            .a(
                "ami_name",
                e("\"triton-deploy-${var.cluster}-${formatdate(\"YYYYMMDDhhmmss\", timestamp())}\""),
            )
            // EC2 tag values are at most 256 characters.
            .a("image_tag", e("substr(var.image, 0, 256)")),
    );

    let mut source = Body::default()
        .a("region", var("region"))
        .a("source_ami", var("source_ami"))
        .a("instance_type", var("instance_type"))
        .a("iam_instance_profile", var("iam_instance_profile"))
        .a("custom_endpoint_ec2", var("ec2_endpoint"))
        .a("ami_name", e("local.ami_name"))
        .a(
            "ami_description",
            e("\"Triton image ${var.image_digest} for ECS cluster ${var.cluster} on ${var.source_ami}\""),
        );
    if spec.bake.subnet.is_some() {
        source = source.a("subnet_id", var("subnet_id"));
    }
    source = match i.provision {
        Provision::OnInstance => source
            .a("communicator", s("ssh"))
            .a("ssh_username", s("ec2-user"))
            .a("ssh_timeout", s("15m")),
        Provision::Here { .. } => source
            .comment("The steps run on the machine running Packer: no connection to the instance.")
            .a("communicator", s("none")),
    };
    if i.dialect == Dialect::Current {
        source = source
            .b(
                "metadata_options",
                Body::default()
                    .a("http_endpoint", s("enabled"))
                    .a("http_tokens", s("required"))
                    .a("http_put_response_hop_limit", V::N(1)),
            )
            // Hosts launched from the AMI default to IMDSv2 only as well.
            .a("imds_support", s("v2.0"));
    }
    source = source
        .b(
            "launch_block_device_mappings",
            Body::default()
                .a("device_name", s("/dev/xvda"))
                .a("volume_size", V::N(spec.root_volume_gib.into()))
                .a("volume_type", s("gp3"))
                .a("iops", V::N(spec.bake.volume_iops.into()))
                .a("throughput", V::N(spec.bake.volume_throughput.into()))
                .a("encrypted", V::B(true))
                .a("delete_on_termination", V::B(true)),
        )
        .a(
            "run_tags",
            V::M(vec![(
                "Name".into(),
                e("\"triton-deploy-bake-${var.cluster}\""),
            )]),
        )
        .a("tags", ami_tags())
        .a("snapshot_tags", ami_tags());
    block(&mut o, "source", &["amazon-ebs", "triton"], source);

    let provisioner = match i.provision {
        Provision::OnInstance => Body::default()
            .a("script", e(format!("\"${{path.root}}/{SCRIPT_FILE}\"")))
            .a("environment_vars", script_env(i))
            .a(
                "execute_command",
                s("chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"),
            ),
        Provision::Here { .. } => Body::default()
            .a("script", e(format!("\"${{path.root}}/{SCRIPT_FILE}\"")))
            .a("environment_vars", script_env(i)),
    };
    let kind = match i.provision {
        Provision::OnInstance => "shell",
        Provision::Here { .. } => "shell-local",
    };
    block(
        &mut o,
        "build",
        &[],
        Body::default()
            .a("sources", V::L(vec![s("source.amazon-ebs.triton")]))
            .bl("provisioner", &[kind], provisioner)
            .bl(
                "post-processor",
                &["manifest"],
                Body::default()
                    .a("output", e(format!("\"${{path.root}}/{MANIFEST_FILE}\"")))
                    .a("strip_path", V::B(true))
                    .a(
                        "custom_data",
                        V::M(vec![
                            ("source_ami".into(), var("source_ami")),
                            ("image".into(), var("image")),
                            ("image_digest".into(), var("image_digest")),
                        ]),
                    ),
            ),
    );
    o
}

/// The steps on the build instance, configured by the provisioner's environment. No credential is
/// written anywhere that outlives the script: the registry login goes to a throwaway Docker
/// configuration, so the AMI carries none.
fn provision_script() -> String {
    r#"#!/bin/bash
# Bakes a Triton image into this host's Docker for a GPU AMI (rendered by triton-deploy).
set -euo pipefail
: "${TD_REGISTRY:?}" "${TD_IMAGE:?}" "${TD_DIGEST:?}" "${TD_REGION:?}" "${TD_ECS_CONFIG:?}" "${TD_ECS_DATA:?}"
say() { echo "triton-deploy: $*"; }

# The registry login lives in a Docker configuration of its own, removed on the way out.
DOCKER_CONFIG=$(mktemp -d)
export DOCKER_CONFIG
trap 'rm -rf "$DOCKER_CONFIG"' EXIT

if ! command -v aws >/dev/null 2>&1; then
  say "installing the AWS CLI"
  dnf install -y -q awscli-2 >/dev/null 2>&1 || yum install -y -q awscli >/dev/null
fi
say "logging in to $TD_REGISTRY with the instance's role"
# (Docker's warning that the login is stored unencrypted is about that throwaway file.)
if ! out=$(aws ecr get-login-password --region "$TD_REGION" \
  | docker login --username AWS --password-stdin "$TD_REGISTRY" 2>&1); then
  say "error: cannot log in to $TD_REGISTRY: $out"
  exit 1
fi

say "pulling $TD_IMAGE"
docker pull --quiet "$TD_IMAGE" >/dev/null
got=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$TD_IMAGE")
case "$got" in
  *"@$TD_DIGEST"*) say "the image is on disk as $TD_DIGEST" ;;
  *) say "error: pulled $TD_IMAGE but Docker knows it as: $got"; exit 1 ;;
esac
docker logout "$TD_REGISTRY" >/dev/null 2>&1 || true

# The ECS agent takes the cached image instead of pulling it again.
mkdir -p "$(dirname "$TD_ECS_CONFIG")"
touch "$TD_ECS_CONFIG"
if grep -q '^ECS_IMAGE_PULL_BEHAVIOR=' "$TD_ECS_CONFIG"; then
  sed -i 's/^ECS_IMAGE_PULL_BEHAVIOR=.*/ECS_IMAGE_PULL_BEHAVIOR=prefer-cached/' "$TD_ECS_CONFIG"
else
  echo 'ECS_IMAGE_PULL_BEHAVIOR=prefer-cached' >> "$TD_ECS_CONFIG"
fi

# Hosts launched from the AMI register afresh: no agent state from this build instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ecs 2>/dev/null; then
  say "stopping the ECS agent"
  systemctl stop ecs
fi
if [ -d "$TD_ECS_DATA" ]; then
  find "$TD_ECS_DATA" -mindepth 1 -delete
fi
say "baked $TD_IMAGE"
"#
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::spec;

    fn spec_of(extra: &str) -> DeploymentSpec {
        spec::parse(
            std::path::Path::new("t.toml"),
            &format!("[service]\nname = \"demo\"\n[image]\nrepository = \"demo\"\n{extra}"),
            None,
        )
        .unwrap()
    }

    fn inputs(spec: &DeploymentSpec, dialect: Dialect) -> Inputs<'_> {
        Inputs {
            spec,
            region: "us-east-1".into(),
            source_ami: "ami-0abc".into(),
            source_ami_parameter: Some(crate::deploy::spec::Ami::AL2023_GPU.into()),
            image: "1.dkr.ecr.us-east-1.amazonaws.com/demo@sha256:ab".into(),
            image_digest: "sha256:ab".into(),
            registry: "1.dkr.ecr.us-east-1.amazonaws.com".into(),
            models: vec!["add_sub".into(), "simple".into()],
            instance_profile: "demo-gpu-profile".into(),
            provision: Provision::OnInstance,
            dialect,
        }
    }

    #[test]
    fn the_template_pulls_by_digest_on_the_spec_s_hardware_and_records_what_it_holds() {
        let spec = spec_of(
            "[ami]\nsubnet = \"subnet-0123\"\nvolume_iops = 6000\nvolume_throughput = 500\n",
        );
        let files = render(&inputs(&spec, Dialect::Current));
        let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [PLUGINS_FILE, TEMPLATE_FILE, SCRIPT_FILE]);
        let t = &files[1].1;
        hcl::parse(t).unwrap_or_else(|e| panic!("{e}\n{t}"));
        let text = t;
        for want in [
            "default = \"ami-0abc\"",
            "default = \"1.dkr.ecr.us-east-1.amazonaws.com/demo@sha256:ab\"",
            "default = \"g5.xlarge\"",
            "default = \"subnet-0123\"",
            "default = \"add_sub,simple\"",
            "subnet_id = var.subnet_id",
            "http_tokens = \"required\"",
            "iops = 6000",
            "throughput = 500",
            "volume_size = 200",
            "encrypted = true",
            "\"triton-deploy:image-digest\" = var.image_digest",
            "\"triton-deploy:source-ami\" = var.source_ami",
            "provisioner \"shell\"",
            "post-processor \"manifest\"",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        // Nothing that logs in with a secret: the instance's role does.
        for secret in [
            "password",
            "access_key",
            "secret_key",
            "akia",
            "session_token",
        ] {
            assert!(
                !t.to_lowercase().contains(secret),
                "{secret} in the template"
            );
        }
        // The script logs in with the role's token from stdin, into a Docker configuration it
        // removes.
        let script = &files[2].1;
        assert!(script.contains("aws ecr get-login-password"));
        assert!(script.contains("--password-stdin"));
        assert!(script.contains("trap 'rm -rf \"$DOCKER_CONFIG\"' EXIT"));
        assert!(files[0].1.contains("required_plugins"));
    }

    #[test]
    fn packer_1_6_gets_the_same_template_without_what_it_cannot_read() {
        let spec = spec_of("");
        let current = render(&inputs(&spec, Dialect::Current));
        let old = render(&inputs(&spec, Dialect::Packer16));
        assert_eq!(old.len(), 2, "no plugins file");
        // The one difference in the template: the IMDS block and the AMI's IMDS attribute.
        let strip = |t: &str| {
            let start = t.find("  metadata_options {").unwrap();
            let end = t[start..].find("  }\n").unwrap() + start + 4;
            let mut t = format!("{}{}", &t[..start], &t[end..]);
            t = t.replace("  imds_support = \"v2.0\"\n", "");
            t
        };
        assert_eq!(strip(&current[1].1), old[0].1);
        assert_eq!(current[2], old[1]);
        assert!(
            !old[0].1.contains("subnet_id = "),
            "no subnet set: the default VPC's"
        );
    }

    #[test]
    fn a_long_model_list_is_cut_to_a_tag_value() {
        let models: Vec<String> = (0..100).map(|i| format!("model_number_{i}")).collect();
        let v = tag_value(&models.join(","));
        assert!(v.chars().count() <= 256, "{}", v.len());
        assert!(v.ends_with(" more"), "{v}");
        assert!(v.starts_with("model_number_0,model_number_1,"));
        assert_eq!(tag_value("a,b"), "a,b");
    }
}
