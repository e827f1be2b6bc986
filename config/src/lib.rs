#![doc = include_str!("../README.md")]

mod annotation;
pub mod compromise;
mod config;
pub mod detection;
pub mod events;
pub mod gate;
pub mod monitor;
pub mod profile;

pub use compromise::{CompromiseError, CompromiseSettings, COMPROMISE_ANNOTATION};
pub use config::{Config, ConfigError, Mode, DEFAULT_CONFIG_PATH, DEFAULT_RUNC_ROOT};
pub use detection::{DetectionError, DetectionSettings, DETECTION_ANNOTATION};
pub use events::{EventSettings, EventSettingsError, WebhookTarget, WebhookUrlError};
pub use gate::GateSettings;
pub use monitor::{HookSetting, MonitorSettings};
pub use profile::{Learning, ProfileError, ProfileSettings, PromotionRule, PROFILE_ANNOTATION};
