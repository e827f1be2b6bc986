#![doc = include_str!("../README.md")]

pub mod bench;
pub mod checks;
pub mod cri;
pub mod demo;
pub mod detections;
pub mod security;
pub mod stream;
pub mod suite;

/// Host-side views (processes, mounts, cgroups), shared with the harness.
pub use palisade_host as host;
