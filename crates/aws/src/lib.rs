//! The AWS side of triton-deploy: thin adapters over the AWS SDK, kept in their own crate so that
//! everyday changes to the CLI do not rebuild the SDK. Nothing here decides; callers do.

pub mod appscaling;
pub mod autoscaling;
pub mod cfn;
pub mod ec2;
pub mod ecr;
pub mod ecs;
pub mod efs;
pub mod elbv2;
pub mod logs;
mod secret;
pub mod ssm;

pub use aws_config::SdkConfig;
pub use secret::Secret;

/// Where and as whom to call AWS: the standard credential chain, with optional region and profile.
/// `AWS_ENDPOINT_URL` (and the per-service variants) are honoured by the SDK itself.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
}

/// Loads the SDK configuration for `opts`.
pub async fn load_config(opts: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &opts.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    loader.load().await
}

/// Renders an SDK error with its service code and message, without the request's internals.
pub fn describe_sdk_error<E, R>(err: &aws_sdk_ecr::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_ecr::error::SdkError;
    match err {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            match (inner.code(), inner.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => inner.to_string(),
            }
        }
        SdkError::DispatchFailure(e) => {
            if e.is_io() || e.is_timeout() {
                "could not reach the AWS endpoint (network error or timeout)".to_string()
            } else {
                format!("request failed: {e:?}")
            }
        }
        SdkError::TimeoutError(_) => "the request to AWS timed out".to_string(),
        SdkError::ConstructionFailure(_) => {
            "could not build the request (are credentials and region configured?)".to_string()
        }
        SdkError::ResponseError(_) => "AWS sent a response that could not be read".to_string(),
        other => other.to_string(),
    }
}

/// A failed AWS call: the action and what AWS (or the network) said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {action} failed: {detail}")]
pub struct ApiError {
    pub service: &'static str,
    pub action: &'static str,
    pub detail: String,
}

impl ApiError {
    /// Whether AWS answered that the thing asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        let d = self.detail.to_ascii_lowercase();
        d.contains("not found")
            || d.contains("notfound")
            || d.contains("does not exist")
            || d.contains("servicenotactive")
    }
}

/// Maps an SDK error to an [`ApiError`] for `service`/`action`.
pub(crate) fn api<E, R>(
    service: &'static str,
    action: &'static str,
) -> impl FnOnce(aws_sdk_ecr::error::SdkError<E, R>) -> ApiError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error,
{
    move |e| ApiError {
        service,
        action,
        detail: describe_sdk_error(&e),
    }
}
