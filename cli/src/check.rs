//! `palisade policy check`: every diagnostic of each policy file, located in the file, then
//! how each rule of each valid policy will be enforced on this node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use palisade_policy::{parse_policies, Diagnostic, Level};
use palisade_sandbox::KernelFeatures;
use serde::Serialize;

use crate::placement::{self, PlacementError, PolicyPlacement};

/// A file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("policy file {path}: {source}")]
    Placement {
        path: PathBuf,
        #[source]
        source: Box<PlacementError>,
    },
}

/// One diagnostic, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDiagnostic {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub level: &'static str,
    pub document: usize,
    pub path: String,
    pub message: String,
}

impl FileDiagnostic {
    fn new(file: &Path, d: &Diagnostic) -> Self {
        Self {
            file: file.to_path_buf(),
            line: d.location.map(|l| l.line),
            column: d.location.map(|l| l.column),
            level: match d.level {
                Level::Error => "error",
                Level::Warning => "warning",
            },
            document: d.document,
            path: d.path.clone(),
            message: d.message.clone(),
        }
    }

    /// `FILE:LINE:COL: error: PATH: MESSAGE`, or `FILE: ...` when the place is unknown.
    pub fn render(&self) -> String {
        let place = match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file.display()),
            _ => self.file.display().to_string(),
        };
        format!("{place}: {}: {}: {}", self.level, self.path, self.message)
    }
}

/// The result for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: PathBuf,
    pub valid: bool,
    pub diagnostics: Vec<FileDiagnostic>,
    pub policies: Vec<PolicyPlacement>,
}

/// The result for every file, and the node it was judged on.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub landlock_abi: Option<u32>,
    pub seccomp_actions: Vec<String>,
    pub files: Vec<FileReport>,
}

impl CheckReport {
    pub fn valid(&self) -> bool {
        self.files.iter().all(|f| f.valid)
    }

    /// The human report: diagnostics first, then one line per rule.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            for d in &f.diagnostics {
                let _ = writeln!(out, "{}", d.render());
            }
        }
        for f in &self.files {
            if !f.valid {
                let errors = f.diagnostics.iter().filter(|d| d.level == "error").count();
                let _ = writeln!(out, "{}: invalid ({errors} error(s))", f.file.display());
                continue;
            }
            let _ = writeln!(
                out,
                "{}: valid, {} polic{}",
                f.file.display(),
                f.policies.len(),
                if f.policies.len() == 1 { "y" } else { "ies" }
            );
            for p in &f.policies {
                let _ = writeln!(out, "  {}:", p.policy);
                for r in &p.rules {
                    let _ = writeln!(
                        out,
                        "    {}: {} {} ({}): {}",
                        r.origin, r.kind, r.target, r.action, r.summary
                    );
                }
                for u in &p.unenforced {
                    let _ = writeln!(out, "    not enforced: {u}");
                }
                for reason in &p.refused_without_degrade {
                    let _ = writeln!(
                        out,
                        "    refused unless the runtime allows degrading: {reason}"
                    );
                }
            }
        }
        out
    }
}

/// Checks one input.
pub fn check_bytes(
    file: &Path,
    bytes: &[u8],
    kernel: &KernelFeatures,
) -> Result<FileReport, CheckError> {
    match parse_policies(bytes) {
        Ok(parsed) => {
            let diagnostics = parsed
                .warnings
                .iter()
                .map(|d| FileDiagnostic::new(file, d))
                .collect();
            let policies = parsed
                .policies
                .iter()
                .map(|p| placement::place(p, kernel))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| CheckError::Placement {
                    path: file.to_path_buf(),
                    source: Box::new(source),
                })?;
            Ok(FileReport {
                file: file.to_path_buf(),
                valid: true,
                diagnostics,
                policies,
            })
        }
        Err(diags) => Ok(FileReport {
            file: file.to_path_buf(),
            valid: !diags.has_errors(),
            diagnostics: diags
                .items
                .iter()
                .map(|d| FileDiagnostic::new(file, d))
                .collect(),
            policies: Vec::new(),
        }),
    }
}

/// Checks every file against this node's kernel features.
pub fn check_files(files: &[PathBuf], kernel: &KernelFeatures) -> Result<CheckReport, CheckError> {
    let mut reports = Vec::new();
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => reports.push(check_bytes(file, &bytes, kernel)?),
            // One unreadable file must not hide the others' diagnostics.
            Err(e) => reports.push(FileReport {
                file: file.clone(),
                valid: false,
                diagnostics: vec![FileDiagnostic {
                    file: file.clone(),
                    line: None,
                    column: None,
                    level: "error",
                    document: 0,
                    path: ".".to_string(),
                    message: format!("cannot read: {e}"),
                }],
                policies: Vec::new(),
            }),
        }
    }
    Ok(CheckReport {
        landlock_abi: kernel.landlock_abi,
        seccomp_actions: kernel.seccomp_actions.iter().cloned().collect(),
        files: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(abi: Option<u32>) -> KernelFeatures {
        KernelFeatures {
            landlock_abi: abi,
            seccomp_actions: ["errno", "log", "allow", "kill_process"]
                .map(String::from)
                .into(),
            user_namespaces: true,
            unprivileged_user_namespaces: None,
            bpf_lsm: false,
        }
    }

    const TOKEN: &str = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: block-sa-token\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: web}\n  file:\n    matchDirectories:\n    - dir: /var/run/secrets/kubernetes.io/serviceaccount/\n      recursive: true\n    matchPatterns:\n    - pattern: /etc/*.key\n  action: Block\n";

    #[test]
    fn narrows_by_the_kernel() {
        let r = check_bytes(Path::new("t.yaml"), TOKEN.as_bytes(), &kernel(Some(6))).unwrap();
        assert!(r.valid);
        let p = &r.policies[0];
        assert_eq!(p.policy, "shop/block-sa-token");
        let dir = &p.rules[0];
        assert_eq!(dir.origin, "spec.file.matchDirectories[0]");
        assert!(dir.summary.starts_with("masked path; "), "{dir:?}");
        assert_eq!(dir.enforcer, "bind-mount-mask");
        assert_eq!(dir.candidates, ["bpf-lsm", "landlock", "bind-mount-mask"]);
        let pattern = &p.rules[1];
        assert!(
            pattern.summary.starts_with("unenforceable here: ")
                && pattern.summary.ends_with(" (audit only)"),
            "{pattern:?}"
        );
        assert_eq!(p.refused_without_degrade.len(), 1, "{p:?}");

        // Where BPF-LSM is in force, both go to the monitor's file_open program.
        let lsm = KernelFeatures {
            bpf_lsm: true,
            ..kernel(Some(6))
        };
        let r = check_bytes(Path::new("t.yaml"), TOKEN.as_bytes(), &lsm).unwrap();
        let p = &r.policies[0];
        for rule in &p.rules {
            assert_eq!(rule.enforcer, "monitor-bpf-lsm", "{rule:?}");
        }
        assert!(p.refused_without_degrade.is_empty(), "{p:?}");
    }

    #[test]
    fn diagnostics_carry_file_line_and_column() {
        let bad = TOKEN.replace("recursive: true", "recursive: true\n      readonly: true");
        let r = check_bytes(Path::new("bad.yaml"), bad.as_bytes(), &kernel(None)).unwrap();
        assert!(!r.valid);
        let d = &r.diagnostics[0];
        assert_eq!(d.path, "spec.file.matchDirectories[0].readonly");
        assert_eq!(d.line, Some(13), "{d:?}");
        assert!(
            d.render()
                .starts_with("bad.yaml:13:7: error: spec.file.matchDirectories[0].readonly: "),
            "{}",
            d.render()
        );
    }
}
