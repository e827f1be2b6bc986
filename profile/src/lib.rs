#![doc = include_str!("../README.md")]

mod commands;
pub mod export;
pub mod floor;
pub mod fold;
pub mod persist;
mod promotable;
pub mod record;
mod workload;

pub use commands::quoted as quoted_command;
pub use fold::Cidr;
pub use record::{
    workload_name, Access, Category, Observation, Parents, Peer, Port, RecordError, Recording,
    WorkloadId,
};
pub mod stage;

pub use export::{Arch, Export, ExportError};
pub use persist::{Document, Loaded, PersistError, Updated};
pub use stage::{Command, Departure, Event, EventKind, Mode, Rule, Stage, StageError, StageState};
