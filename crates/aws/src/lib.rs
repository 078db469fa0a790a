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
    /// The region; else the profile's, the environment's, or the fallback.
    pub region: Option<String>,
    /// The shared-config profile.
    pub profile: Option<String>,
}

/// The region used when neither the options nor the standard chain (`AWS_REGION`, the profile)
/// name one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// Attempts per AWS call (the first and the retries).
pub const MAX_ATTEMPTS: u32 = 6;

/// Loads the SDK configuration for `opts`: the one place it is built. The region is resolved
/// once (the option, else the standard chain, else [`FALLBACK_REGION`]), so that
/// `config.region()` is always set; retries use the SDK's adaptive mode with 6 attempts:
/// exponential backoff with jitter on throttling (HTTP 400 `Throttling`, `ThrottlingException`,
/// EC2's `RequestLimitExceeded`, 429s), 5xx and transient network errors, and on throttling a
/// client-side rate limit that slows the calls that follow — a rollout's polls meet AWS's
/// per-account API rates, shared with everything else in the account.
pub async fn load_config(opts: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::adaptive().with_max_attempts(MAX_ATTEMPTS));
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    let region = aws_config::meta::region::RegionProviderChain::first_try(
        opts.region.clone().map(aws_config::Region::new),
    )
    .or_else({
        let chain = aws_config::default_provider::region::DefaultRegionChain::builder();
        match &opts.profile {
            Some(p) => chain.profile_name(p).build(),
            None => chain.build(),
        }
    })
    .or_else(aws_config::Region::from_static(FALLBACK_REGION));
    loader.region(region).load().await
}

/// The last `/`-separated part of an ARN (`.../task-definition/name:3` → `name:3`).
pub fn short_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The region of a configuration built by [`load_config`].
pub fn region_of(config: &aws_config::SdkConfig) -> String {
    config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| FALLBACK_REGION.to_string())
}

/// The service error code of an SDK error (`ParameterNotFound`, `InvalidVpcID.NotFound`...), when
/// AWS answered with one.
pub fn error_code<E, R>(err: &aws_sdk_ecr::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata,
{
    match err {
        aws_sdk_ecr::error::SdkError::ServiceError(e) => e.err().code().map(str::to_string),
        _ => None,
    }
}

/// Renders an SDK error with its service code and message, without the request's internals: one
/// line saying what went wrong and what to do for the failures a user can fix (no credentials,
/// expired or refused ones, access denied, an unreachable endpoint). The SDK's own structure is
/// logged at debug level (`-vv`).
pub fn describe_sdk_error<E, R>(err: &aws_sdk_ecr::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_ecr::error::SdkError;
    match err {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            tracing::debug!(error = ?inner, "AWS call failed");
            let said = match (inner.code(), inner.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => inner.to_string(),
            };
            match inner.code().and_then(advice) {
                Some(what) => format!("{what} ({said})"),
                None => said,
            }
        }
        SdkError::DispatchFailure(e) => {
            let detail = format!("{e:?}");
            tracing::debug!(error = %detail, "AWS call failed");
            if detail.contains("CredentialsNotLoaded") {
                NO_CREDENTIALS.to_string()
            } else if detail.contains("FailedToLoadToken") || detail.contains("expired") {
                "the AWS credentials could not be loaded: the SSO session or the token has expired (run `aws sso login`, or renew the credentials)".to_string()
            } else if e.is_io() || e.is_timeout() {
                "could not reach the AWS endpoint (network error or timeout)".to_string()
            } else {
                match e.as_connector_error() {
                    Some(c) => format!("request failed: {}", source_chain(c)),
                    None => "request failed".to_string(),
                }
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

/// What the credential chain tried when it found nothing.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: tried the environment (AWS_ACCESS_KEY_ID), the shared config and credentials files (the profile: --profile or AWS_PROFILE, SSO included), web identity, the ECS container and the instance metadata; set one of them (`aws configure`, `aws sso login`)";

/// What to do about a service error code a user can fix.
fn advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired" => {
            "the AWS credentials have expired: renew them (`aws sso login`, or new keys)"
        }
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "UnauthorizedException" => {
            "access denied: the caller's IAM policy needs this action on this resource (the README's \"On AWS\" lists what triton-deploy calls)"
        }
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "AuthFailure"
        | "IncompleteSignature" => {
            "the AWS credentials were refused: check the access key and secret, or the profile in use"
        }
        _ => return None,
    })
}

/// An error and its sources, each once, joined by ": ".
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// A failed AWS call: the action, the service's error code and what AWS (or the network) said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {action} failed: {detail}")]
pub struct ApiError {
    /// The AWS service.
    pub service: &'static str,
    /// The call.
    pub action: &'static str,
    /// The service error code, when AWS answered with one.
    pub code: Option<String>,
    /// What AWS said.
    pub detail: String,
}

impl ApiError {
    /// An error made here rather than answered by AWS (an answer that could not be used).
    pub fn local(service: &'static str, action: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            service,
            action,
            code: None,
            detail: detail.into(),
        }
    }

    /// Whether AWS answered with the error code `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Whether AWS answered that the thing asked about does not exist: decided by the error
    /// code, plus the emulator's answers named in [`quirks`].
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(quirks::is_not_found_code)
            || quirks::says_not_found(self.code.as_deref(), &self.detail)
    }
}

/// The few places where an error can only be recognized by its message, each with the reason.
pub mod quirks {
    /// Error codes that mean "does not exist", across the services used.
    pub fn is_not_found_code(code: &str) -> bool {
        code.ends_with("NotFoundException")
            || code.ends_with("NotFound")
            || code.ends_with(".NotFound")
            || matches!(
                code,
                "NoSuchEntity" | "ServiceNotActiveException" | "ParameterNotFound"
            )
    }

    /// Answers whose code is generic and whose message says "not found":
    /// - CloudFormation's `DescribeStacks` of a missing stack answers `ValidationError` "Stack
    ///   with id X does not exist" (AWS does this too: there is no dedicated code);
    /// - ECS `DescribeTaskDefinition` of a missing family answers `ClientException` "Unable to
    ///   describe task definition" (AWS and the emulator alike);
    /// - Application Auto Scaling answers the emulator's `ValidationException` "No scalable
    ///   target registered" where AWS answers `ObjectNotFoundException`;
    /// - the emulator's unparsed error bodies (XML on a JSON protocol) carry no code at all.
    pub fn says_not_found(code: Option<&str>, detail: &str) -> bool {
        let generic = matches!(
            code,
            None | Some("ValidationError" | "ClientException" | "ValidationException")
        );
        generic
            && (detail.contains("does not exist")
                || detail.contains("Unable to describe task definition")
                || detail.contains("No scalable target"))
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
        code: error_code(&e),
        detail: describe_sdk_error(&e),
    }
}
