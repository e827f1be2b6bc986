#![doc = include_str!("../README.md")]

pub mod check;
pub mod containerd;
pub mod events;
pub mod gate;
pub mod hostroot;
pub mod install;
pub mod placement;
pub mod profile;
pub mod records;
pub mod shimconfig;
pub mod status;
