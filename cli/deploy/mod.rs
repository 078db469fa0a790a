//! Stage 3, deployment: `triton-deploy.toml` → [`spec::DeploymentSpec`] → plan → deployment →
//! endpoint.
//!
//! In: the spec file and an image (pushed by [`crate::package`]).
//! Out: the rendered documents ([`render`]), the desired state and its field-level diff against
//! what is deployed ([`plan`]), the applied service and the wait for it ([`service`]), and the
//! endpoint it answers on. The pure parts (spec, render, plan) never call AWS; the rest calls it
//! only through the adapters of the `triton-deploy-aws` crate.

pub mod ami;
pub mod endpoint;
pub mod error;
pub mod logs;
pub mod plan;
pub mod preflight;
pub mod refresh;
pub mod render;
pub mod rollback;
pub mod rollout;
pub mod route;
pub mod service;
pub mod spec;
pub mod stack;
pub mod status;
pub mod teardown;

use std::time::Duration;

/// How long to wait for AWS and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Give up waiting after this long (the work goes on in AWS).
    pub timeout: Duration,
    /// Time between polls.
    pub poll: Duration,
}
