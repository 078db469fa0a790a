//! Stage 2, packaging: a validated model repository → layers → an OCI image in a registry.
//!
//! In: a [`crate::triton::model_repo::ModelRepo`] that [`crate::validate`] accepted.
//! Out: one content-addressed layer per model ([`layers`]), an image on a `tritonserver` base
//! ([`image`]) pushed through the OCI distribution API ([`registry`]) or built through the
//! Docker Engine ([`docker`]); the result is the image's name and digest.

pub(crate) mod docker;
pub(crate) mod image;
pub(crate) mod layers;
pub(crate) mod push;
pub mod registry;
