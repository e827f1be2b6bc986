//! The KubeArmorPolicy export: every learned category as `action: Allow` rules, so that each
//! kind becomes an allow-list and what was not learned gets the deny posture.
//!
//! - process: `matchPaths` per executable, with `fromSource` naming its parents when every
//!   start came from a recorded parent (none when the runtime started it, or past the caps);
//! - file: `matchPaths` per file and `matchDirectories` (recursive) per folded directory,
//!   `readOnly` where nothing was written;
//! - network: `matchProtocols` per protocol, `fromSource` naming the executables that used it
//!   (none for raw sockets, nor past `MAX_SOCKET_SOURCES` executables, with a note);
//! - capabilities: `matchCapabilities`;
//! - syscalls: one `matchSyscalls` with the learned calls, the floor and the runtime's calls
//!   after its filter is loaded (`floor::RUNTIME_AFTER_FILTER`).
//!
//! The deny posture is not a field of the policy: palisade takes it from the shim's
//! configuration (`Block`, or `Audit` to try an allow-list out), which is what the audit and
//! enforce stages set. Past `RULES_PER_DOCUMENT` rules, the file rules continue in further
//! documents of the same output (`NAME-files-2`, ...), which palisade merges.

use std::collections::BTreeMap;

use palisade_policy::{parse_policies, Protocol, API_VERSION, KIND};
use serde::Serialize;

use super::{check_selector, Export, ExportError};
use crate::floor::{RUNTIME_AFTER_FILTER, SYSCALL_FLOOR};
use crate::record::Recording;

/// Rules per document, under the validator's limit of 1024.
pub const RULES_PER_DOCUMENT: usize = 1000;

/// The most `fromSource` entries one rule may carry (the validator's list limit).
const MAX_SOURCES: usize = 64;

/// The most executables a protocol's `fromSource` names: the monitor's socket-creation hook
/// holds four binaries per protocol (`monitor::rules::MAX_SOCK_SOURCES`), and the shim drops a
/// longer list, so a longer one is exported without `fromSource`.
pub const MAX_SOCKET_SOURCES: usize = 4;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Selector {
    #[serde(rename = "matchLabels")]
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Spec {
    selector: Selector,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscalls: Option<Syscalls>,
    action: &'static str,
}

#[derive(Serialize, Clone)]
struct Source {
    path: String,
}

#[derive(Serialize)]
struct Process {
    #[serde(rename = "matchPaths")]
    match_paths: Vec<ProcessPath>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessPath {
    path: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    from_source: Vec<Source>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    match_paths: Vec<FilePath>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    match_directories: Vec<FileDir>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct FilePath {
    path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct FileDir {
    dir: String,
    recursive: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

#[derive(Serialize)]
struct Network {
    #[serde(rename = "matchProtocols")]
    match_protocols: Vec<ProtocolRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProtocolRule {
    protocol: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    from_source: Vec<Source>,
}

#[derive(Serialize)]
struct Capabilities {
    #[serde(rename = "matchCapabilities")]
    match_capabilities: Vec<CapabilityRule>,
}

#[derive(Serialize)]
struct CapabilityRule {
    capability: &'static str,
}

#[derive(Serialize)]
struct Syscalls {
    #[serde(rename = "matchSyscalls")]
    match_syscalls: Vec<SyscallRule>,
}

#[derive(Serialize)]
struct SyscallRule {
    syscall: Vec<String>,
}

/// The labels every exported policy carries, naming where it came from.
fn labels() -> BTreeMap<String, String> {
    [("palisade.dev/learned".to_string(), "true".to_string())].into()
}

/// Exports `rec` as a KubeArmorPolicy named `name` in the workload's namespace, selecting pods
/// by `selector` (matchLabels), checked with palisade's own parser and validator.
pub fn kubearmor(
    rec: &Recording,
    name: &str,
    selector: &BTreeMap<String, String>,
) -> Result<Export, ExportError> {
    let workload = rec.workload.to_string();
    check_selector(&workload, selector)?;
    let mut notes = Vec::new();
    if let Err(reasons) = rec.promotable() {
        notes.extend(reasons);
    }

    let process = (!rec.executables.is_empty()).then(|| Process {
        match_paths: rec
            .executables
            .iter()
            .map(|(path, parents)| {
                let restricted = !parents.runtime
                    && !parents.any
                    && !parents.paths.is_empty()
                    && parents.paths.len() <= MAX_SOURCES;
                ProcessPath {
                    path: path.clone(),
                    from_source: if restricted {
                        parents
                            .paths
                            .iter()
                            .map(|p| Source { path: p.clone() })
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect(),
    });

    let mut file_paths = Vec::new();
    let mut file_dirs = Vec::new();
    for (path, access) in &rec.files {
        if path.ends_with('/') {
            file_dirs.push(FileDir {
                dir: path.clone(),
                recursive: true,
                read_only: !access.write,
            });
        } else {
            file_paths.push(FilePath {
                path: path.clone(),
                read_only: !access.write,
            });
        }
    }

    let mut by_protocol: BTreeMap<&'static str, Vec<Source>> = BTreeMap::new();
    for (exe, protocols) in &rec.sockets {
        for p in protocols {
            by_protocol
                .entry(p.as_str())
                .or_default()
                .push(Source { path: exe.clone() });
        }
    }
    let mut match_protocols = Vec::new();
    for (protocol, sources) in by_protocol {
        // Raw sockets cannot be restricted to binaries (the socket-creation hook does not see
        // AF_PACKET), and past the monitor's list the restriction would be dropped.
        let from_source = if protocol == Protocol::Raw.as_str() {
            Vec::new()
        } else if sources.len() > MAX_SOCKET_SOURCES {
            notes.push(format!(
                "{protocol} sockets were created by {} executables; the monitor restricts at most {MAX_SOCKET_SOURCES} per protocol, so {protocol} is allowed to every executable",
                sources.len()
            ));
            Vec::new()
        } else {
            sources
        };
        match_protocols.push(ProtocolRule {
            protocol,
            from_source,
        });
    }
    let network = (!match_protocols.is_empty()).then_some(Network { match_protocols });

    if !rec.capabilities_observed() {
        notes.push(
            "capabilities: not observable where this profile was recorded, so no capability rules are exported (the hardened capability set still applies)"
                .to_string(),
        );
    }
    let capabilities =
        (rec.capabilities_observed() && !rec.capabilities.is_empty()).then(|| Capabilities {
            match_capabilities: rec
                .capabilities
                .iter()
                .map(|c| CapabilityRule { capability: c.name })
                .collect(),
        });

    let mut calls: Vec<String> = rec.syscalls.iter().cloned().collect();
    calls.extend(SYSCALL_FLOOR.iter().map(|s| s.to_string()));
    calls.extend(RUNTIME_AFTER_FILTER.iter().map(|s| s.to_string()));
    calls.sort();
    calls.dedup();
    let syscalls = Some(Syscalls {
        match_syscalls: vec![SyscallRule { syscall: calls }],
    });

    let fixed = process.as_ref().map_or(0, |p| p.match_paths.len())
        + network.as_ref().map_or(0, |n| n.match_protocols.len())
        + capabilities
            .as_ref()
            .map_or(0, |c| c.match_capabilities.len())
        + 1;
    let first_room = RULES_PER_DOCUMENT.saturating_sub(fixed);
    let mut file_rules: Vec<File> = Vec::new();
    let mut current = File::default();
    let mut room = first_room;
    for item in file_paths
        .into_iter()
        .map(Ok)
        .chain(file_dirs.into_iter().map(Err))
    {
        if room == 0 {
            if !current.match_paths.is_empty() || !current.match_directories.is_empty() {
                file_rules.push(std::mem::take(&mut current));
            }
            room = RULES_PER_DOCUMENT;
        }
        match item {
            Ok(p) => current.match_paths.push(p),
            Err(d) => current.match_directories.push(d),
        }
        room -= 1;
    }
    if !current.match_paths.is_empty() || !current.match_directories.is_empty() {
        file_rules.push(current);
    }

    let meta = |name: String| Metadata {
        name,
        namespace: rec.workload.namespace.clone(),
        labels: labels(),
    };
    let mut docs = vec![Doc {
        api_version: API_VERSION,
        kind: KIND,
        metadata: meta(name.to_string()),
        spec: Spec {
            selector: Selector {
                match_labels: selector.clone(),
            },
            process,
            file: None,
            network,
            capabilities,
            syscalls,
            action: "Allow",
        },
    }];
    for (i, file) in file_rules.into_iter().enumerate() {
        if i == 0 && first_room > 0 {
            docs[0].spec.file = Some(file);
            continue;
        }
        docs.push(Doc {
            api_version: API_VERSION,
            kind: KIND,
            metadata: meta(format!("{name}-files-{}", docs.len() + 1)),
            spec: Spec {
                selector: Selector {
                    match_labels: selector.clone(),
                },
                process: None,
                file: Some(file),
                network: None,
                capabilities: None,
                syscalls: None,
                action: "Allow",
            },
        });
    }

    let mut text = format!(
        "# Learned profile of {workload}: {} observations from {} pod(s).\n\
         # Allow-lists: what was not learned gets the deny posture palisade runs with\n\
         # (Audit while the profile is in audit, Block once enforced).\n",
        rec.observations,
        rec.pods.len() as u64 + rec.pods_beyond
    );
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        let yaml = serde_yaml::to_string(doc).map_err(|e| ExportError::Serialize {
            workload: workload.clone(),
            reason: e.to_string(),
        })?;
        text.push_str(&yaml);
    }
    if let Err(diags) = parse_policies(text.as_bytes()) {
        let diagnostics = diags
            .items
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ExportError::Invalid {
            workload,
            diagnostics,
        });
    }
    Ok(Export { text, notes })
}

#[cfg(test)]
#[path = "kubearmor_tests.rs"]
pub(crate) mod tests;
