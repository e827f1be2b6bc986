#![doc = include_str!("../README.md")]

pub mod capabilities;
pub mod config;
mod harden;
pub mod install;
pub mod kernel;
pub mod paths;
pub mod seccomp;
pub mod spec;

pub use config::HardeningConfig;
pub use harden::{harden_spec, HardenError, HardeningReport, CONTAINER_TYPE_ANNOTATION};
pub use kernel::KernelFeatures;
