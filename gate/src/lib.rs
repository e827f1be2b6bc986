#![doc = include_str!("../README.md")]

pub mod body;
pub mod decide;
pub mod events;
pub mod grammar;
mod idle;
pub mod indicators;
pub mod mode;
pub mod path;
pub mod persist;
pub mod profile;
pub mod proxy;
pub mod ranges;
mod refusal;
pub mod request;
pub mod rules;
pub mod shared;
pub mod store;
pub mod upstream;
pub mod value;
mod wire;

pub use decide::{decide, decide_response, Decision};
pub use events::{EventKind, EventSink, GateEvent, LogSink};
pub use indicators::PodIndicators;
pub use mode::{AutoAlert, Mode, Promotion, Stages, Variety};
pub use persist::{export, import, load, path_in, save, PersistError, ServiceProfiles, Strictness};
pub use profile::{Limits, Profile};
pub use proxy::{Gate, GateConfig, GateError, SharedProfile};
pub use request::{Body, Request, Response};
pub use upstream::{Connector, DirectConnector, UpstreamError};
