//! triton-deploy: take a Triton model repository to a load-tested, autoscaled GPU service on ECS.
//!
//! Data flows one way, one module per stage:
//! `model repo → ModelRepo (validated) → layers → ImageRef → DeploymentSpec → Plan → Deployment → Endpoint → BenchReport`.

pub mod bench;
pub mod bench_report;
pub mod commands;
pub mod deploy;
pub mod docker_build;
pub mod grpc;
pub mod http1;
pub mod image;
pub mod infra;
pub mod kserve;
pub mod layers;
pub mod model_config;
pub mod model_repo;
pub mod onnx;
pub mod pbtxt;
pub mod registry;
pub mod spec;
pub mod taskdef;
pub mod tensor;
pub mod terraform;
pub mod validate;
