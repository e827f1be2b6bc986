#![doc = include_str!("../README.md")]

pub mod floor;
pub mod fold;
pub mod record;

pub use fold::Cidr;
pub use record::{
    Access, Category, Observation, Parents, Peer, Port, RecordError, Recording, WorkloadId,
};
