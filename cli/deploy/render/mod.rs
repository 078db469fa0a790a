//! DeploymentSpec → the documents of a deployment: the CloudFormation template of the cluster
//! stack ([`cloudformation`]), the ECS task definition ([`taskdef`]) and the equivalent Terraform
//! module ([`terraform`]). Pure functions: they render, callers apply.

pub mod checks;
pub mod cloudformation;
pub mod hcl;
pub mod taskdef;
pub mod terraform;
