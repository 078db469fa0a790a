//! SSM parameters (the GPU AMI ID behind `/aws/service/ecs/optimized-ami/...`).

use std::collections::BTreeMap;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{ParameterType, ResourceTypeForTagging, Tag};

use crate::describe_sdk_error;

/// An SSM call failed; what AWS said.
#[derive(Debug, thiserror::Error)]
#[error("SSM {action} failed: {detail}")]
pub struct SsmError {
    /// The call.
    pub action: &'static str,
    /// What AWS said.
    pub detail: String,
}

/// Systems Manager Parameter Store.
pub struct Ssm {
    client: Client,
}

impl Ssm {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ssm {
            client: Client::new(config),
        }
    }

    /// The parameter's value, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<String>, SsmError> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e) => {
                if crate::error_code(&e).as_deref() == Some("ParameterNotFound") {
                    Ok(None)
                } else {
                    Err(SsmError {
                        action: "GetParameter",
                        detail: describe_sdk_error(&e),
                    })
                }
            }
        }
    }

    /// Sets the parameter to an AMI ID (data type `aws:ec2:image`, so CloudFormation and EC2
    /// read it as one), with `description`, and tags it with `tags`.
    pub async fn put_ami(
        &self,
        name: &str,
        ami: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), SsmError> {
        self.client
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type("aws:ec2:image")
            .description(description)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| SsmError {
                action: "PutParameter",
                detail: describe_sdk_error(&e),
            })?;
        if tags.is_empty() {
            return Ok(());
        }
        let tags: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        self.client
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| SsmError {
                action: "AddTagsToResource",
                detail: describe_sdk_error(&e),
            })?;
        Ok(())
    }
}
