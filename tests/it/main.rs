//! The integration tests, one binary with a module per area (one link of the library and the AWS
//! SDK instead of one per file). Tests marked `#[ignore]` need the local stand-in stack
//! (`scripts/stack.sh up`; `./scripts/test.sh` starts it and runs them all).

mod ami;
mod bench;
mod cluster;
mod conformance;
mod deploy;
mod docs;
mod loader;
mod push;
mod render;
mod rollout;
mod support;
mod triton;
mod validate;
