#![doc = include_str!("../README.md")]

pub mod checks;
pub mod cri;
pub mod host;
pub mod stream;
pub mod suite;
