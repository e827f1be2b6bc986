//! The plan: what the shim asks palisade-init to apply, as plain serde types with a validator.

use crate::caps;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The only plan format this helper understands.
pub const VERSION: u32 = 1;

/// Plans are a few kilobytes; the cap keeps a wrong path (say, a device) from eating memory.
const MAX_PLAN_BYTES: u64 = 1 << 20;

/// Everything palisade-init applies before it execs the entrypoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Must be [`VERSION`].
    pub version: u32,
    /// Absent: no landlock domain is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockPlan>,
    /// Absent: the capability sets are left as runc made them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilitiesPlan>,
    pub no_new_privs: bool,
}

/// The landlock ruleset: an allow-list over what it handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockPlan {
    /// Lowest kernel landlock ABI accepted.
    pub required_abi: u32,
    /// On an older kernel, drop what it lacks instead of failing.
    #[serde(default)]
    pub best_effort: bool,
    /// Filesystem rights the ruleset handles; absent means every right the kernel knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_fs: Option<Vec<FsAccess>>,
    #[serde(default)]
    pub fs: Vec<FsRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetPlan>,
    #[serde(default)]
    pub scope: ScopePlan,
    #[serde(default)]
    pub log: LogPlan,
}

/// Rights granted beneath one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: Vec<FsAccess>,
    /// A missing optional path is skipped; a missing required one is an error.
    #[serde(default)]
    pub optional: bool,
}

/// A landlock filesystem access right; the discriminant is the kernel's bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccess {
    Execute = 0,
    WriteFile = 1,
    ReadFile = 2,
    ReadDir = 3,
    RemoveDir = 4,
    RemoveFile = 5,
    MakeChar = 6,
    MakeDir = 7,
    MakeReg = 8,
    MakeSock = 9,
    MakeFifo = 10,
    MakeBlock = 11,
    MakeSym = 12,
    Refer = 13,
    Truncate = 14,
    IoctlDev = 15,
}

impl FsAccess {
    /// Every right, in kernel bit order.
    pub const ALL: [FsAccess; 16] = [
        FsAccess::Execute,
        FsAccess::WriteFile,
        FsAccess::ReadFile,
        FsAccess::ReadDir,
        FsAccess::RemoveDir,
        FsAccess::RemoveFile,
        FsAccess::MakeChar,
        FsAccess::MakeDir,
        FsAccess::MakeReg,
        FsAccess::MakeSock,
        FsAccess::MakeFifo,
        FsAccess::MakeBlock,
        FsAccess::MakeSym,
        FsAccess::Refer,
        FsAccess::Truncate,
        FsAccess::IoctlDev,
    ];

    /// Everything that changes the filesystem: every right but execute, reading and ioctl
    /// ([`FsAccess::ALL`] without those four), in kernel bit order.
    pub const WRITE: [FsAccess; 12] = {
        let mut out = [FsAccess::WriteFile; 12];
        let (mut i, mut n) = (0, 0);
        while i < Self::ALL.len() {
            let a = Self::ALL[i];
            if !matches!(
                a,
                FsAccess::Execute | FsAccess::ReadFile | FsAccess::ReadDir | FsAccess::IoctlDev
            ) {
                out[n] = a;
                n += 1;
            }
            i += 1;
        }
        assert!(n == out.len(), "every slot of WRITE is filled");
        out
    };

    /// The name used in plans.
    pub fn name(self) -> &'static str {
        match self {
            FsAccess::Execute => "execute",
            FsAccess::WriteFile => "write_file",
            FsAccess::ReadFile => "read_file",
            FsAccess::ReadDir => "read_dir",
            FsAccess::RemoveDir => "remove_dir",
            FsAccess::RemoveFile => "remove_file",
            FsAccess::MakeChar => "make_char",
            FsAccess::MakeDir => "make_dir",
            FsAccess::MakeReg => "make_reg",
            FsAccess::MakeSock => "make_sock",
            FsAccess::MakeFifo => "make_fifo",
            FsAccess::MakeBlock => "make_block",
            FsAccess::MakeSym => "make_sym",
            FsAccess::Refer => "refer",
            FsAccess::Truncate => "truncate",
            FsAccess::IoctlDev => "ioctl_dev",
        }
    }
}

/// TCP port rules (landlock ABI 4 and later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetPlan {
    /// Whether bind and connect are handled at all; defaults to true so that writing a
    /// `net` section denies every port it does not list.
    #[serde(default = "yes")]
    pub handled: bool,
    #[serde(default)]
    pub bind_tcp: Vec<u16>,
    #[serde(default)]
    pub connect_tcp: Vec<u16>,
}

/// IPC scoping (landlock ABI 6 and later): deny reaching outside the domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopePlan {
    /// Signals to processes outside the domain are denied.
    #[serde(default)]
    pub signal: bool,
    /// Connecting to abstract unix sockets created outside the domain is denied.
    #[serde(default)]
    pub abstract_unix_socket: bool,
}

/// Audit logging of denials (landlock ABI 7 and later); the defaults are the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPlan {
    /// Log denials by palisade-init itself, before it execs.
    #[serde(default = "yes")]
    pub same_exec: bool,
    /// Log denials by the entrypoint and what it runs.
    #[serde(default)]
    pub new_exec: bool,
    /// Log denials from domains the workload nests inside this one.
    #[serde(default = "yes")]
    pub subdomains: bool,
}

impl Default for LogPlan {
    fn default() -> Self {
        LogPlan {
            same_exec: true,
            new_exec: false,
            subdomains: true,
        }
    }
}

/// The capability bounding set to leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesPlan {
    /// OCI names (`CAP_NET_BIND_SERVICE`); every other capability is dropped.
    pub bounding_keep: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One thing wrong with a plan, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Every problem of a plan, shown on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A plan that could not be read or is not acceptable.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error("plan {}: {}", .path.display(), crate::sys::reason(.source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plan {}: larger than {MAX_PLAN_BYTES} bytes", .path.display())]
    TooLarge { path: PathBuf },
    #[error("plan {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("plan {}: {problems}", .path.display())]
    Invalid { path: PathBuf, problems: Problems },
}

impl Plan {
    /// Every problem in the plan that does not depend on the kernel or the filesystem.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |at: String, message: String| out.push(Problem { at, message });
        if self.version != VERSION {
            problem(
                "version".into(),
                format!("unsupported version {}, expected {VERSION}", self.version),
            );
        }
        if let Some(ll) = &self.landlock {
            if ll.required_abi == 0 {
                problem("landlock.required_abi".into(), "must be at least 1".into());
            }
            for (i, rule) in ll.fs.iter().enumerate() {
                if !rule.path.is_absolute() {
                    problem(format!("landlock.fs[{i}].path"), "must be absolute".into());
                }
                if rule.access.is_empty() {
                    problem(
                        format!("landlock.fs[{i}].access"),
                        "must not be empty".into(),
                    );
                }
                if let Some(handled) = &ll.handled_fs {
                    for (j, right) in rule.access.iter().enumerate() {
                        if !handled.contains(right) {
                            problem(
                                format!("landlock.fs[{i}].access[{j}]"),
                                format!("{} is not in handled_fs", right.name()),
                            );
                        }
                    }
                }
            }
            if let Some(net) = &ll.net {
                if !net.handled && (!net.bind_tcp.is_empty() || !net.connect_tcp.is_empty()) {
                    problem(
                        "landlock.net".into(),
                        "ports listed but handled is false".into(),
                    );
                }
            }
        }
        if let Some(caps) = &self.capabilities {
            for (i, name) in caps.bounding_keep.iter().enumerate() {
                if caps::from_name(name).is_none() {
                    problem(
                        format!("capabilities.bounding_keep[{i}]"),
                        format!("unknown capability {name:?}"),
                    );
                }
            }
        }
        out
    }

    /// Parses and validates a plan; `path` only names it in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_slice(text).map_err(|source| PlanError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let problems = plan.problems();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(PlanError::Invalid {
                path: path.to_owned(),
                problems: Problems(problems),
            })
        }
    }

    /// Reads, parses and validates the plan at `path`.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let read_err = |source| PlanError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = Vec::new();
        file.take(MAX_PLAN_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge {
                path: path.to_owned(),
            });
        }
        Plan::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, PlanError> {
        Plan::parse(text.as_bytes(), Path::new("/p.json"))
    }

    #[test]
    fn minimal_plan_takes_defaults() {
        let plan = parse(r#"{"version": 1, "no_new_privs": true}"#).unwrap();
        assert_eq!(
            plan,
            Plan {
                version: 1,
                landlock: None,
                capabilities: None,
                no_new_privs: true
            }
        );
        let plan =
            parse(r#"{"version":1,"no_new_privs":false,"landlock":{"required_abi":1,"net":{}}}"#)
                .unwrap();
        let ll = plan.landlock.unwrap();
        assert!(!ll.best_effort);
        assert_eq!(ll.handled_fs, None);
        assert!(
            ll.net.unwrap().handled,
            "a net section handles ports by default"
        );
        assert_eq!(ll.scope, ScopePlan::default());
        assert_eq!(ll.log, LogPlan::default());
        assert!(ll.log.same_exec && !ll.log.new_exec && ll.log.subdomains);
    }

    #[test]
    fn full_plan_round_trips() {
        let text = r#"{
            "version": 1,
            "landlock": {
                "required_abi": 6,
                "best_effort": true,
                "handled_fs": ["execute", "read_file", "read_dir", "write_file", "ioctl_dev"],
                "fs": [
                    {"path": "/usr", "access": ["execute", "read_file", "read_dir"]},
                    {"path": "/data", "access": ["read_file", "write_file"], "optional": true}
                ],
                "net": {"handled": true, "bind_tcp": [8080], "connect_tcp": [443, 53]},
                "scope": {"signal": true, "abstract_unix_socket": true},
                "log": {"same_exec": false, "new_exec": true, "subdomains": false}
            },
            "capabilities": {"bounding_keep": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]},
            "no_new_privs": true
        }"#;
        let plan = parse(text).unwrap();
        let ll = plan.landlock.as_ref().unwrap();
        assert_eq!(ll.fs[1].path, Path::new("/data"));
        assert!(ll.fs[1].optional && !ll.fs[0].optional);
        assert_eq!(
            ll.fs[0].access,
            vec![FsAccess::Execute, FsAccess::ReadFile, FsAccess::ReadDir]
        );
        assert_eq!(ll.net.as_ref().unwrap().connect_tcp, vec![443, 53]);
        assert!(ll.scope.signal && ll.scope.abstract_unix_socket);
        assert!(!ll.log.same_exec && ll.log.new_exec && !ll.log.subdomains);
        let again = serde_json::to_vec(&plan).unwrap();
        assert_eq!(parse(std::str::from_utf8(&again).unwrap()).unwrap(), plan);
    }

    #[test]
    fn every_right_name_parses_to_itself() {
        for right in FsAccess::ALL {
            let json = format!("\"{}\"", right.name());
            let parsed: FsAccess = serde_json::from_str(&json).unwrap();
            assert_eq!(parsed, right);
        }
    }

    #[test]
    fn unknown_fields_and_rights_are_rejected() {
        let err = parse(r#"{"version":1,"no_new_privs":true,"seccomp":{}}"#).unwrap_err();
        assert!(matches!(err, PlanError::Parse { .. }));
        assert!(err.to_string().contains("unknown field `seccomp`"), "{err}");
        let err = parse(
            r#"{"version":1,"no_new_privs":true,"landlock":{"required_abi":1,"fs":[{"path":"/","access":["fly"]}]}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `fly`"), "{err}");
        let err = parse(r#"{"version":1}"#).unwrap_err();
        assert!(
            err.to_string().contains("missing field `no_new_privs`"),
            "{err}"
        );
    }

    #[test]
    fn validator_reports_every_problem_with_its_path() {
        let text = r#"{
            "version": 2,
            "landlock": {
                "required_abi": 0,
                "handled_fs": ["read_file"],
                "fs": [
                    {"path": "relative", "access": []},
                    {"path": "/ok", "access": ["read_file", "write_file"]}
                ],
                "net": {"handled": false, "bind_tcp": [80]}
            },
            "capabilities": {"bounding_keep": ["CAP_CHOWN", "chown"]},
            "no_new_privs": true
        }"#;
        let err = parse(text).unwrap_err();
        let PlanError::Invalid { problems, .. } = &err else {
            panic!("expected invalid plan, got {err}");
        };
        let at: Vec<&str> = problems.0.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            vec![
                "version",
                "landlock.required_abi",
                "landlock.fs[0].path",
                "landlock.fs[0].access",
                "landlock.fs[1].access[1]",
                "landlock.net",
                "capabilities.bounding_keep[1]",
            ]
        );
        let line = err.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("plan /p.json: version: unsupported version 2, expected 1; "),
            "{line}"
        );
        assert!(
            line.contains("landlock.fs[1].access[1]: write_file is not in handled_fs"),
            "{line}"
        );
    }

    #[test]
    fn load_reports_missing_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = Plan::load(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("plan {}: no such file or directory", missing.display())
        );
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; (MAX_PLAN_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            Plan::load(&big).unwrap_err(),
            PlanError::TooLarge { .. }
        ));
        let good = dir.path().join("good.json");
        std::fs::write(&good, br#"{"version":1,"no_new_privs":true}"#).unwrap();
        assert!(Plan::load(&good).unwrap().no_new_privs);
    }
}
