//! The shipped files of runtimeclass/ agree with each other and with the code: every shim
//! configuration loads with the shim's parser, each containerd snippet declares the four
//! handlers `palisade install` adds with their configuration files, and each handler has a
//! RuntimeClass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use palisade_cli::containerd::{ConfigVersion, ContainerdConfig, RUNTIMES};
use palisade_config::{Config, Mode};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass")
}

#[test]
fn shim_configurations_load_and_audit_is_audit() {
    for name in RUNTIMES {
        let path = dir().join(format!("{name}.toml"));
        let config = Config::load(&path).unwrap();
        let want = if name == "palisade-audit" {
            Mode::Audit
        } else {
            Mode::Enforce
        };
        assert_eq!(config.mode, want, "{}", path.display());
        assert_eq!(
            config.strict.is_some(),
            name == "palisade-strict",
            "{}",
            path.display()
        );
        let want = if name == "palisade-compat" {
            palisade_sandbox::HardeningConfig::compat()
        } else {
            palisade_sandbox::HardeningConfig::default()
        };
        assert_eq!(
            config.hardening,
            want,
            "{}: the default hardening stays on (palisade-compat: every relaxation)",
            path.display()
        );
    }
}

#[test]
fn containerd_snippets_declare_every_handler() {
    for (file, version) in [
        ("containerd-config-v2.toml", ConfigVersion::V2),
        ("containerd-config-v3.toml", ConfigVersion::V3),
    ] {
        let path = dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = ContainerdConfig::parse(&path, &text, ConfigVersion::V2).unwrap();
        assert_eq!(config.version(), version, "{file}");
        let runtimes = config.palisade_runtimes();
        let names: Vec<&str> = runtimes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, RUNTIMES, "{file}");
        for r in &runtimes {
            assert_eq!(
                r.config_path,
                Some(PathBuf::from(format!("/etc/palisade/{}.toml", r.name))),
                "{file}: {}",
                r.name
            );
            assert_eq!(r.pod_annotations, ["palisade.dev/*"], "{file}: {}", r.name);
        }
    }
}

#[test]
fn every_handler_has_a_runtime_class() {
    let text = std::fs::read_to_string(dir().join("runtimeclass.yaml")).unwrap();
    let mut handlers = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("handler: ") {
            handlers.push(h.trim().to_string());
        }
    }
    assert_eq!(handlers, RUNTIMES);
}
