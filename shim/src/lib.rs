#![doc = include_str!("../README.md")]

pub mod compromise;
pub mod config;
pub mod error;
pub mod events;
pub mod gate;
pub mod logging;
pub mod monitoring;
pub mod netns;
pub mod policy;
pub mod report;
pub mod runc;
pub mod service;
pub mod shim;
pub mod stats;
pub mod stdio;
pub mod task;
