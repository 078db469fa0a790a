//! GPU AMIs with the Triton image already on disk: new hosts start their first task from the
//! baked image instead of pulling 10+ GB while the service waits.
//!
//! In: the spec (its `[ami]` section, instance type, region, cluster) and the pushed image.
//! Out: a Packer template ([`template`]), the AMI Packer built ([`manifest`]), published to the
//! cluster's SSM parameter ([`build`]) that `compute.ami = "baked"` launch templates resolve.
//! [`preread`] is the boot-time pass that warms the AMI's lazily loaded snapshot. The pure parts
//! (template, manifest, preread) never call AWS or run Packer; [`packer`] is the only place
//! Packer runs.

pub mod build;
pub mod manifest;
pub mod packer;
pub mod preread;
pub mod template;
