//! The `[events]` table: the violation log, the Falco webhook, the metrics and containerd's topic.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The shim configuration's `[events]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Where `events.jsonl` is written.
    pub log_dir: PathBuf,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// POST each event's Falco JSON here (`http://host:port/path`); off when unset or `""`.
    #[serde(deserialize_with = "empty_is_none")]
    pub webhook_url: Option<String>,
    /// Deadline for one webhook request, connect to status line.
    pub webhook_timeout_ms: u64,
    /// Write this shim's counters as `<metrics_dir>/<shim id>.prom` (node-exporter textfile
    /// collector); `""` turns it off (TOML has no null).
    #[serde(deserialize_with = "empty_is_none")]
    pub metrics_dir: Option<PathBuf>,
    /// Also serve the counters over HTTP on this address; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Identical events within this window are folded into one with a count; 0 turns it off.
    pub dedup_window_ms: u64,
    /// Events per second each container may send to the sinks; 0 turns the limit off.
    pub rate_per_second: u32,
    /// Publish events to containerd on `/palisade/violation` (seen by `ctr events`).
    pub containerd_topic: bool,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            log_dir: PathBuf::from("/var/log/palisade"),
            max_bytes: 10 << 20,
            keep: 3,
            webhook_url: None,
            webhook_timeout_ms: 2000,
            metrics_dir: Some(PathBuf::from("/run/palisade/metrics")),
            metrics_listen: None,
            dedup_window_ms: 10_000,
            rate_per_second: 100,
            containerd_topic: false,
        }
    }
}

/// An empty string for an optional setting means unset.
fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then(|| T::from(text)))
}

/// A setting of the `[events]` table that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EventSettingsError {
    /// The key's path in the configuration (`events.webhook_url`).
    pub field: &'static str,
    pub reason: String,
}

impl EventSettings {
    /// Checks what a typo would otherwise silently switch off.
    pub fn validate(&self) -> Result<(), EventSettingsError> {
        let bad = |field, reason: String| Err(EventSettingsError { field, reason });
        if let Some(url) = &self.webhook_url {
            if let Err(e) = WebhookTarget::parse(url) {
                return bad("events.webhook_url", e.to_string());
            }
        }
        if self.webhook_timeout_ms == 0 {
            return bad("events.webhook_timeout_ms", "must be at least 1".into());
        }
        if let Some(dir) = &self.metrics_dir {
            if !dir.is_absolute() {
                return bad("events.metrics_dir", "must be an absolute path".into());
            }
        }
        if !self.log_dir.is_absolute() {
            return bad("events.log_dir", "must be an absolute path".into());
        }
        Ok(())
    }
}

/// A webhook URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook {url}: {reason}")]
pub struct WebhookUrlError {
    pub url: String,
    pub reason: &'static str,
}

/// Where events are posted, parsed once from the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WebhookTarget {
    /// Parses `http://host[:port][/path]`; https is not spoken.
    pub fn parse(url: &str) -> Result<Self, WebhookUrlError> {
        let bad = |reason| WebhookUrlError {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host and no user info"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| bad("port is not a number"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("needs a host"));
        }
        Ok(WebhookTarget {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port`, with an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let t = WebhookTarget::parse("http://127.0.0.1:2801/falco").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 2801, "/falco")
        );
        let t = WebhookTarget::parse("http://sidekick.falco").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = WebhookTarget::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.authority(), "[::1]:9000");
        let err = WebhookTarget::parse("https://x").unwrap_err().to_string();
        assert_eq!(err, "webhook https://x: only http:// URLs are supported");
        assert!(WebhookTarget::parse("http://h:port/").is_err());
        assert!(WebhookTarget::parse("http:///x").is_err());
    }

    #[test]
    fn settings_are_validated_and_defaults_are_safe() {
        let d = EventSettings::default();
        assert!(d.validate().is_ok());
        assert_eq!(d.webhook_url, None);
        assert_eq!(d.metrics_listen, None);
        assert!(!d.containerd_topic);
        assert_eq!(d.metrics_dir, Some(PathBuf::from("/run/palisade/metrics")));
        assert_eq!((d.dedup_window_ms, d.rate_per_second), (10_000, 100));
        let err = EventSettings {
            webhook_url: Some("https://sidekick:2801".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "events.webhook_url: webhook https://sidekick:2801: only http:// URLs are supported"
        );
        let err = EventSettings {
            metrics_dir: Some(PathBuf::from("metrics")),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(err, "events.metrics_dir: must be an absolute path");
        let parsed: EventSettings = toml::from_str(
            "webhook_url = \"http://127.0.0.1:2801/\"\nmetrics_listen = \"127.0.0.1:9464\"\ncontainerd_topic = true\n",
        )
        .unwrap();
        assert_eq!(
            parsed.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(parsed.keep, 3, "unset keys keep their defaults");
        assert_eq!(
            parsed.webhook_url.as_deref(),
            Some("http://127.0.0.1:2801/")
        );
        assert!(parsed.metrics_dir.is_some());
        let off: EventSettings =
            toml::from_str("metrics_dir = \"\"\nwebhook_url = \"\"\n").unwrap();
        assert_eq!((off.metrics_dir, off.webhook_url), (None, None));
        let err = toml::from_str::<EventSettings>("webhook = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `webhook`"), "{err}");
    }
}
