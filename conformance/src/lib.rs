#![doc = include_str!("../README.md")]

pub mod bench;
pub mod checks;
pub mod cri;
pub mod demo;
pub mod host;
pub mod security;
pub mod stream;
pub mod suite;
