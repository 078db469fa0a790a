//! Triton's own formats, read exactly as Triton reads them.
//!
//! In: a model repository on disk — `config.pbtxt` text, version directories, ONNX graphs.
//! Out: [`model_config::ModelConfig`] values with the source span of every field ([`pbtxt`]),
//! a [`model_repo::ModelRepo`] (models, versions, configurations) and the inputs/outputs of
//! ONNX graphs ([`onnx`]). Nothing here judges; [`crate::validate`] applies the rules.

pub mod model_config;
pub mod model_repo;
pub mod onnx;
pub mod pbtxt;
