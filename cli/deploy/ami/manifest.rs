//! Packer's manifest (`post-processor "manifest"`): which AMI the last build made. An
//! `amazon-ebs` artifact ID is `region:ami-id`, comma-separated when the AMI was copied to more
//! regions; the manifest keeps every run, the last one named by `last_run_uuid`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    builds: Vec<Build>,
    #[serde(default)]
    last_run_uuid: String,
}

#[derive(Debug, Deserialize)]
struct Build {
    #[serde(default)]
    builder_type: String,
    #[serde(default)]
    artifact_id: String,
    #[serde(default)]
    packer_run_uuid: String,
}

/// The AMI in `region` that the manifest's last run made.
pub fn ami(text: &str, region: &str) -> Result<String, String> {
    let m: Manifest =
        serde_json::from_str(text).map_err(|e| format!("Packer's manifest does not parse: {e}"))?;
    let last: Vec<&Build> = m
        .builds
        .iter()
        .filter(|b| b.packer_run_uuid == m.last_run_uuid)
        .collect();
    let Some(build) = last.last() else {
        return Err("Packer's manifest has no build of its last run".into());
    };
    let ids: Vec<(&str, &str)> = build
        .artifact_id
        .split(',')
        .filter_map(|a| a.trim().split_once(':'))
        .collect();
    ids.iter()
        .find(|(r, id)| *r == region && id.starts_with("ami-"))
        .map(|(_, id)| id.to_string())
        .ok_or_else(|| {
            format!(
                "Packer's last build ({}) made no AMI in {region}: its artifact is '{}'",
                build.builder_type, build.artifact_id
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_RUNS: &str = r#"{
      "builds": [
        {"name": "triton", "builder_type": "amazon-ebs", "artifact_id": "us-east-1:ami-0111",
         "packer_run_uuid": "old"},
        {"name": "triton", "builder_type": "amazon-ebs",
         "artifact_id": "eu-west-1:ami-0333,us-east-1:ami-0222", "packer_run_uuid": "new",
         "custom_data": {"image": "x@sha256:1"}}
      ],
      "last_run_uuid": "new"
    }"#;

    #[test]
    fn the_last_run_s_ami_in_the_region_is_read() {
        assert_eq!(ami(TWO_RUNS, "us-east-1").unwrap(), "ami-0222");
        assert_eq!(ami(TWO_RUNS, "eu-west-1").unwrap(), "ami-0333");
        let e = ami(TWO_RUNS, "ap-south-1").unwrap_err();
        assert!(e.contains("no AMI in ap-south-1"), "{e}");
    }

    #[test]
    fn a_manifest_without_an_ami_is_a_clear_error() {
        let null = r#"{"builds": [{"builder_type": "null", "artifact_id": "Null", "packer_run_uuid": "u"}], "last_run_uuid": "u"}"#;
        let e = ami(null, "us-east-1").unwrap_err();
        assert!(
            e.contains("(null) made no AMI") && e.contains("'Null'"),
            "{e}"
        );
        assert!(ami("{}", "us-east-1").unwrap_err().contains("no build"));
        assert!(
            ami("not json", "us-east-1")
                .unwrap_err()
                .contains("does not parse")
        );
    }
}
