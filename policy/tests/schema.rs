//! The JSON schema in `schema/` accepts the use-case policies and agrees with the parser.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> Result<jsonschema::Validator> {
    let path = manifest().join("schema/kubearmor-policy.schema.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let schema: serde_json::Value = serde_json::from_str(&text).context("schema is not JSON")?;
    jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("schema does not compile: {e}"))
}

/// Every non-empty YAML document, as JSON.
fn documents(yaml: &str) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let value = Option::<serde_json::Value>::deserialize(de).context("YAML to JSON")?;
        out.extend(value);
    }
    Ok(out)
}

fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn use_case_fixtures_validate() -> Result<()> {
    let v = validator()?;
    let mut count = 0;
    for entry in std::fs::read_dir(manifest().join("tests/fixtures"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for doc in documents(&text)? {
            let errs = schema_errors(&v, &doc);
            assert!(errs.is_empty(), "{}: {errs:#?}", path.display());
            count += 1;
        }
    }
    assert_eq!(count, 7);
    Ok(())
}

const FULL: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: full
  namespace: ns
  labels: {team: sec}
  annotations: {note: x}
  uid: 0d9c
  resourceVersion: \"12\"
  generation: 3
  creationTimestamp: \"2024-01-01T00:00:00Z\"
spec:
  severity: 4
  tags: [a]
  message: m
  action: Block
  status: Active
  apparmor: \"profile x {}\"
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: label, operator: In, values: [app=web]}
  process:
    severity: 2
    matchPaths:
    - path: /bin/sleep
      ownerOnly: true
      fromSource: [{path: /bin/bash}, {dir: /usr/bin/, recursive: true}]
      severity: 3
      tags: [t]
      message: m
      action: Allow
    - execname: curl
    matchDirectories:
    - {dir: /opt/, recursive: true, ownerOnly: false, fromSource: [{path: /bin/sh}], action: Audit}
    matchPatterns:
    - {pattern: /tmp/*, ownerOnly: true}
  file:
    action: Audit
    matchPaths:
    - {path: /etc/shadow, readOnly: true, ownerOnly: true, fromSource: [{path: /bin/login}]}
    matchDirectories:
    - {dir: /etc/ssl/, recursive: true, readOnly: true}
    matchPatterns:
    - {pattern: /home/*/.ssh/**, readOnly: false, ownerOnly: false}
  network:
    tags: [net]
    matchProtocols:
    - {protocol: TCP, fromSource: [{path: /usr/sbin/nginx}]}
    - {protocol: raw, action: Block}
  capabilities:
    message: caps
    matchCapabilities:
    - {capability: net_raw}
    - {capability: CAP_SYS_ADMIN, fromSource: [{path: /bin/mount}]}
  syscalls:
    severity: 6
    matchSyscalls:
    - {syscall: [ptrace], fromSource: [{dir: /bin/, recursive: true}]}
    matchPaths:
    - {path: /etc/, recursive: true, syscall: [unlinkat]}
status:
  status: OK
";

#[test]
fn a_policy_with_every_field_passes_both() -> Result<()> {
    let v = validator()?;
    let doc = documents(FULL)?.remove(0);
    let errs = schema_errors(&v, &doc);
    assert!(errs.is_empty(), "{errs:#?}");
    let parsed =
        palisade_policy::parse_policies(FULL.as_bytes()).map_err(|d| anyhow::anyhow!("{d}"))?;
    assert_eq!(parsed.policies[0].rule_count(), 13);
    Ok(())
}

/// Asserts that the schema and the parser both refuse a file policy whose `matchPaths` is
/// `rules` (`what` names the mistake).
fn both_reject(v: &jsonschema::Validator, what: &str, rules: &str) -> Result<()> {
    let yaml = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  file:\n    matchPaths:\n{rules}"
    );
    let doc = documents(&yaml)?.remove(0);
    assert!(!v.is_valid(&doc), "schema accepted {what}");
    assert!(
        palisade_policy::parse_policies(yaml.as_bytes()).is_err(),
        "parser accepted {what}"
    );
    Ok(())
}

#[test]
fn schema_and_parser_reject_the_same_mistakes() -> Result<()> {
    let v = validator()?;
    let cases = [
        ("unknown field", "      readonly: true\n"),
        ("bad action", "      action: Deny\n"),
        ("severity", "      severity: 11\n"),
    ];
    for (what, extra) in cases {
        both_reject(&v, what, &format!("    - path: /etc/shadow\n{extra}"))?;
    }
    let bad_values = [
        ("relative path", "    - path: etc/shadow\n"),
        ("directory as path", "    - path: /etc/\n"),
        (
            "source with path and dir",
            "    - path: /a\n      fromSource: [{path: /b, dir: /c/}]\n",
        ),
        (
            "source with neither",
            "    - path: /a\n      fromSource: [{}]\n",
        ),
    ];
    for (what, rule) in bad_values {
        both_reject(&v, what, rule)?;
    }
    let dir = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  file:\n    matchDirectories:\n    - dir: /var/log\n";
    assert!(!v.is_valid(&documents(dir)?.remove(0)));
    assert!(palisade_policy::parse_policies(dir.as_bytes()).is_err());
    Ok(())
}
