//! triton-deploy: take a Triton model repository to a load-tested, autoscaled GPU service on ECS.
//!
//! Data flows one way, one folder per stage, each importing only the stages before it:
//!
//! | folder | stage | in → out |
//! |---|---|---|
//! | [`triton`] | Triton's own formats | `config.pbtxt`, model directories, ONNX graphs → `ModelConfig`, [`triton::model_repo::ModelRepo`] |
//! | [`validate`] | 1. lint | `ModelRepo` → [`validate::Report`] |
//! | [`package`] | 2. package | a validated repository → layers → an image in a registry |
//! | [`local`] | 2b. run here | an image → a Triton container on the Docker Engine, models READY, the time to ready |
//! | [`deploy`] | 3. deploy | `triton-deploy.toml` → `DeploymentSpec` → plan → deployment → endpoint |
//! | [`kserve`] | the protocol | model metadata, datatypes, tensors, gRPC messages (shared by deploy's verify and bench) |
//! | [`bench`] | 4. measure | endpoint → `BenchReport` |
//! | [`output`] | the way out | formats, progress, errors → exit codes |
//! | [`commands`] | the CLI | clap arguments → a stage → a report |

pub mod app;
pub(crate) mod bench;
pub(crate) mod commands;
pub(crate) mod deploy;
pub mod kserve;
pub(crate) mod local;
pub(crate) mod output;
pub mod package;
pub mod triton;
pub mod validate;

/// What the fuzz targets (`fuzz/`) drive that is not otherwise public: the load generator's
/// HTTP/1.1 client, whose answers come from servers the user may not control.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::bench::http1::{Conn, Failure, MAX_BODY, dechunk};
}
