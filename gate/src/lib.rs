#![doc = include_str!("../README.md")]

pub mod decide;
pub mod mode;
pub mod persist;
pub mod profile;
pub mod request;
pub mod rules;
pub mod value;

pub use decide::{decide, decide_response, Decision};
pub use mode::{AutoAlert, Mode, ModeSwitch};
pub use persist::{export, import, load, save, PersistError};
pub use profile::{Limits, Profile};
pub use request::{Body, Request, Response};
