//! [`DeployError`]: what can go wrong in the deployment stage, one enum for rollout, status,
//! rollback, destroy and logs.

use super::service::ServiceError;

/// A failure of the deployment stage.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] super::spec::SpecError),
    /// The account or region cannot run the deployment as specified.
    #[error("preflight: {0}")]
    Preflight(String),
    /// A CloudFormation call or stack operation failed.
    #[error(transparent)]
    Cfn(#[from] triton_deploy_aws::cfn::CfnError),
    /// An EC2 call failed.
    #[error(transparent)]
    Ec2(#[from] triton_deploy_aws::ec2::Ec2Error),
    /// An SSM call failed.
    #[error(transparent)]
    Ssm(#[from] triton_deploy_aws::ssm::SsmError),
    /// Another AWS call failed.
    #[error(transparent)]
    Api(#[from] triton_deploy_aws::ApiError),
    /// The service phase failed (image, task definition, service, wait, verify).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The deployment is in a state that prevents the work (a stack mid-update, a stack whose
    /// outputs are missing).
    #[error("{0}")]
    State(String),
    /// The work ran and failed (an instance refresh that ended badly, a wait that timed out).
    #[error("{0}")]
    Failed(String),
    /// Nothing is deployed where the command needs a deployment.
    #[error("{0}")]
    NotDeployed(String),
    /// A value given on the command line does not fit the deployment (e.g. `rollback --to`).
    #[error("{0}")]
    Usage(String),
}
