//! SSM parameters (the GPU AMI ID behind `/aws/service/ecs/optimized-ami/...`).

use aws_sdk_ssm::Client;

use crate::describe_sdk_error;

/// An SSM call failed; what AWS said.
#[derive(Debug, thiserror::Error)]
#[error("SSM GetParameter failed: {0}")]
pub struct SsmError(pub String);

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
                    Err(SsmError(describe_sdk_error(&e)))
                }
            }
        }
    }
}
