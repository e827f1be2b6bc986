//! Landlock: kernel ABI detection, compiling a plan into a ruleset for that ABI, enforcing it.

use crate::plan::{FsAccess, LandlockPlan};
use crate::sys;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use thiserror::Error;

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;

const ACCESS_NET_BIND_TCP: u64 = 1 << 0;
const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const RESTRICT_SELF_LOG_SAME_EXEC_OFF: u32 = 1 << 0;
const RESTRICT_SELF_LOG_NEW_EXEC_ON: u32 = 1 << 1;
const RESTRICT_SELF_LOG_SUBDOMAINS_OFF: u32 = 1 << 2;

/// First ABI with TCP port rules.
const ABI_NET: u32 = 4;
/// First ABI with signal and abstract unix socket scoping.
const ABI_SCOPE: u32 = 6;
/// First ABI with the audit logging flags of landlock_restrict_self.
const ABI_LOG: u32 = 7;

/// Rights that make sense on a non-directory; the kernel refuses directory rights on files.
const FILE_RIGHTS: u64 = bit(FsAccess::Execute)
    | bit(FsAccess::WriteFile)
    | bit(FsAccess::ReadFile)
    | bit(FsAccess::Truncate)
    | bit(FsAccess::IoctlDev);

/// The kernel's bit for a filesystem right.
pub const fn bit(right: FsAccess) -> u64 {
    1u64 << (right as u32)
}

/// The first ABI that knows a filesystem right.
pub const fn abi_of(right: FsAccess) -> u32 {
    match right {
        FsAccess::Refer => 2,
        FsAccess::Truncate => 3,
        FsAccess::IoctlDev => 5,
        _ => 1,
    }
}

/// Every filesystem right an ABI version knows.
pub fn fs_rights_of_abi(abi: u32) -> u64 {
    FsAccess::ALL
        .iter()
        .filter(|r| abi >= abi_of(**r))
        .fold(0, |m, r| m | bit(*r))
}

fn mask_of(rights: &[FsAccess]) -> u64 {
    rights.iter().fold(0, |m, r| m | bit(*r))
}

/// Why landlock could not be applied.
#[derive(Debug, Error)]
pub enum LandlockError {
    #[error("landlock: kernel abi {available} is lower than required abi {required}")]
    AbiTooLow { required: u32, available: u32 },
    #[error("landlock: {feature} needs abi {needed}, kernel has {available}")]
    FeatureMissing {
        feature: String,
        needed: u32,
        available: u32,
    },
    #[error("landlock: {}: {}", .path.display(), sys::reason(.source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("landlock: create ruleset: {}", sys::reason(.0))]
    CreateRuleset(#[source] io::Error),
    #[error("landlock: {}: add rule: {}", .path.display(), sys::reason(.source))]
    AddPathRule {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("landlock: tcp port {port}: add rule: {}", sys::reason(.source))]
    AddPortRule {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("landlock: restrict self: {}", sys::reason(.0))]
    RestrictSelf(#[source] io::Error),
}

impl LandlockError {
    /// The kernel is too old for the plan, as opposed to the ruleset failing.
    pub fn is_abi(&self) -> bool {
        matches!(
            self,
            LandlockError::AbiTooLow { .. } | LandlockError::FeatureMissing { .. }
        )
    }
}

/// The kernel's landlock ABI version; 0 when landlock is not built in or not enabled.
pub fn abi() -> u32 {
    probe_abi().unwrap_or(0)
}

/// The kernel's landlock ABI version, or why the probe failed: ENOSYS when landlock is not
/// built in, EOPNOTSUPP when it is but was not enabled at boot.
pub fn probe_abi() -> io::Result<u32> {
    // SAFETY: with a null attribute pointer, size 0 and the version flag (the documented
    // probe) the kernel reads no memory and creates no descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))
}

/// One path-beneath rule, rights already fitted to the ABI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: PathBuf,
    pub access: u64,
    pub optional: bool,
}

/// A plan fitted to a kernel ABI, ready to enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub abi: u32,
    pub handled_fs: u64,
    pub handled_net: u64,
    pub scoped: u64,
    pub paths: Vec<PathRule>,
    /// Port to bind/connect rights.
    pub ports: BTreeMap<u16, u64>,
    pub restrict_flags: u32,
}

impl Ruleset {
    /// Nothing is handled: creating the ruleset would fail, and it would restrict nothing.
    pub fn is_empty(&self) -> bool {
        self.handled_fs == 0 && self.handled_net == 0 && self.scoped == 0
    }
}

/// Fits a plan to a kernel ABI: without `best_effort` anything the kernel lacks is an
/// error; with it, what the kernel lacks is left out (so on ABI 0 nothing is enforced).
pub fn compile(plan: &LandlockPlan, abi: u32) -> Result<Ruleset, LandlockError> {
    let strict = !plan.best_effort;
    if strict && abi < plan.required_abi {
        return Err(LandlockError::AbiTooLow {
            required: plan.required_abi,
            available: abi,
        });
    }
    let need = |feature: &str, needed: u32| -> Result<bool, LandlockError> {
        if abi >= needed {
            Ok(true)
        } else if strict {
            Err(LandlockError::FeatureMissing {
                feature: feature.to_owned(),
                needed,
                available: abi,
            })
        } else {
            Ok(false)
        }
    };

    let supported = fs_rights_of_abi(abi);
    let handled_fs = match &plan.handled_fs {
        Some(rights) => {
            for right in rights {
                need(right.name(), abi_of(*right))?;
            }
            mask_of(rights) & supported
        }
        None => supported,
    };

    let mut paths = Vec::with_capacity(plan.fs.len());
    for rule in &plan.fs {
        for right in &rule.access {
            need(right.name(), abi_of(*right))?;
        }
        let access = mask_of(&rule.access) & handled_fs;
        if access != 0 {
            paths.push(PathRule {
                path: rule.path.clone(),
                access,
                optional: rule.optional,
            });
        }
    }

    let mut handled_net = 0;
    let mut ports = BTreeMap::new();
    if let Some(net) = plan.net.as_ref().filter(|n| n.handled) {
        if need("net", ABI_NET)? {
            handled_net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP;
            for port in &net.bind_tcp {
                *ports.entry(*port).or_insert(0) |= ACCESS_NET_BIND_TCP;
            }
            for port in &net.connect_tcp {
                *ports.entry(*port).or_insert(0) |= ACCESS_NET_CONNECT_TCP;
            }
        }
    }

    let mut scoped = 0;
    if plan.scope.signal && need("scope.signal", ABI_SCOPE)? {
        scoped |= SCOPE_SIGNAL;
    }
    if plan.scope.abstract_unix_socket && need("scope.abstract_unix_socket", ABI_SCOPE)? {
        scoped |= SCOPE_ABSTRACT_UNIX_SOCKET;
    }

    let mut restrict_flags = 0;
    if !plan.log.same_exec {
        restrict_flags |= RESTRICT_SELF_LOG_SAME_EXEC_OFF;
    }
    if plan.log.new_exec {
        restrict_flags |= RESTRICT_SELF_LOG_NEW_EXEC_ON;
    }
    if !plan.log.subdomains {
        restrict_flags |= RESTRICT_SELF_LOG_SUBDOMAINS_OFF;
    }
    if restrict_flags != 0 && !need("log", ABI_LOG)? {
        restrict_flags = 0;
    }

    Ok(Ruleset {
        abi,
        handled_fs,
        handled_net,
        scoped,
        paths,
        ports,
        restrict_flags,
    })
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

fn add_rule<T>(ruleset: &OwnedFd, kind: libc::c_int, attr: &T) -> io::Result<()> {
    // SAFETY: attr points to a live struct of the layout the rule type expects.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            kind,
            attr as *const T,
            0u32,
        )
    };
    sys::check(ret).map(|_| ())
}

fn open_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a NUL-terminated path; O_PATH opens no file contents.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    sys::check(libc::c_long::from(fd))?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn is_dir(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is writable.
    let ret = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    sys::check(libc::c_long::from(ret))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Enforces the ruleset on the calling thread, irreversibly, for it and its future children.
///
/// Needs no_new_privs or CAP_SYS_ADMIN. Paths are opened here, so they are resolved in the
/// caller's mount namespace (inside the container when run by the shim).
pub fn enforce(ruleset: &Ruleset) -> Result<(), LandlockError> {
    if ruleset.is_empty() {
        return Ok(());
    }
    let attr = RulesetAttr {
        handled_access_fs: ruleset.handled_fs,
        handled_access_net: ruleset.handled_net,
        scoped: ruleset.scoped,
    };
    // Older kernels reject a struct larger than they know unless its tail is zero, and
    // some predate that check: pass only the fields the ABI defines.
    let size = match ruleset.abi {
        0..ABI_NET => 8usize,
        ABI_NET..ABI_SCOPE => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: attr is live and at least `size` bytes long.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    let fd = sys::check(ret).map_err(LandlockError::CreateRuleset)?;
    let fd = libc::c_int::try_from(fd)
        .map_err(|_| LandlockError::CreateRuleset(io::Error::from_raw_os_error(libc::EBADF)))?;
    // SAFETY: the kernel just returned this descriptor (close-on-exec) to us.
    let ruleset_fd = unsafe { OwnedFd::from_raw_fd(fd) };

    for rule in &ruleset.paths {
        let parent = match open_path(&rule.path) {
            Ok(fd) => fd,
            Err(err) if rule.optional && err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(LandlockError::Open {
                    path: rule.path.clone(),
                    source,
                })
            }
        };
        let dir = is_dir(&parent).map_err(|source| LandlockError::Open {
            path: rule.path.clone(),
            source,
        })?;
        // Directory rights on a file grant nothing there, and the kernel refuses them.
        let access = if dir {
            rule.access
        } else {
            rule.access & FILE_RIGHTS
        };
        if access == 0 {
            continue;
        }
        let attr = PathBeneathAttr {
            allowed_access: access,
            parent_fd: parent.as_raw_fd(),
        };
        add_rule(&ruleset_fd, RULE_PATH_BENEATH, &attr).map_err(|source| {
            LandlockError::AddPathRule {
                path: rule.path.clone(),
                source,
            }
        })?;
    }

    for (port, access) in &ruleset.ports {
        let attr = NetPortAttr {
            allowed_access: *access,
            port: u64::from(*port),
        };
        add_rule(&ruleset_fd, RULE_NET_PORT, &attr).map_err(|source| {
            LandlockError::AddPortRule {
                port: *port,
                source,
            }
        })?;
    }

    // SAFETY: ruleset_fd is a landlock ruleset descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            ruleset_fd.as_raw_fd(),
            ruleset.restrict_flags,
        )
    };
    sys::check(ret).map_err(LandlockError::RestrictSelf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FsAccess as A, FsRule};
    use crate::plan::{LogPlan, NetPlan, ScopePlan};

    fn plan(required_abi: u32, best_effort: bool) -> LandlockPlan {
        LandlockPlan {
            required_abi,
            best_effort,
            handled_fs: None,
            fs: vec![FsRule {
                path: "/usr".into(),
                access: vec![A::Execute, A::ReadFile, A::ReadDir],
                optional: false,
            }],
            net: None,
            scope: ScopePlan::default(),
            log: LogPlan::default(),
        }
    }

    #[test]
    fn rights_per_abi_follow_the_kernel_history() {
        assert_eq!(fs_rights_of_abi(0), 0);
        assert_eq!(fs_rights_of_abi(1), 0x1fff);
        assert_eq!(fs_rights_of_abi(2), 0x3fff);
        assert_eq!(fs_rights_of_abi(4), 0x7fff);
        assert_eq!(fs_rights_of_abi(5), 0xffff);
        assert_eq!(fs_rights_of_abi(7), 0xffff);
        assert_eq!(bit(A::MakeSym), 1 << 12);
        assert_eq!(bit(A::IoctlDev), 1 << 15);
    }

    #[test]
    fn default_handled_is_everything_the_abi_knows() {
        let rs = compile(&plan(1, false), 3).unwrap();
        assert_eq!(rs.handled_fs, 0x7fff);
        assert_eq!(rs.paths.len(), 1);
        assert_eq!(rs.paths[0].access, 0b1101);
        assert_eq!((rs.handled_net, rs.scoped, rs.restrict_flags), (0, 0, 0));
        assert!(!rs.is_empty());
    }

    #[test]
    fn required_abi_above_the_kernel_fails_unless_best_effort() {
        let err = compile(&plan(99, false), 7).unwrap_err();
        assert!(err.is_abi());
        assert_eq!(
            err.to_string(),
            "landlock: kernel abi 7 is lower than required abi 99"
        );
        let rs = compile(&plan(99, true), 7).unwrap();
        assert_eq!(rs.handled_fs, 0xffff);
    }

    #[test]
    fn features_the_kernel_lacks_fail_strict_and_drop_best_effort() {
        let mut p = plan(1, false);
        p.net = Some(NetPlan {
            handled: true,
            bind_tcp: vec![8080],
            connect_tcp: vec![443, 8080],
        });
        p.scope.signal = true;
        p.fs[0].access.push(A::IoctlDev);
        p.log.new_exec = true;

        let err = compile(&p, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "landlock: ioctl_dev needs abi 5, kernel has 3"
        );
        assert!(err.is_abi());

        p.best_effort = true;
        let rs = compile(&p, 3).unwrap();
        assert_eq!(rs.paths[0].access, 0b1101, "ioctl_dev dropped on abi 3");
        assert_eq!((rs.handled_net, rs.scoped, rs.restrict_flags), (0, 0, 0));
        assert!(rs.ports.is_empty());

        let rs = compile(&p, 7).unwrap();
        assert_eq!(rs.paths[0].access, 0b1101 | (1 << 15));
        assert_eq!(rs.handled_net, 0b11);
        assert_eq!(rs.ports.get(&8080), Some(&0b11));
        assert_eq!(rs.ports.get(&443), Some(&0b10));
        assert_eq!(rs.scoped, SCOPE_SIGNAL);
        assert_eq!(rs.restrict_flags, RESTRICT_SELF_LOG_NEW_EXEC_ON);

        p.best_effort = false;
        p.fs[0].access.pop();
        let err = compile(&p, 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "landlock: scope.signal needs abi 6, kernel has 5"
        );
    }

    #[test]
    fn explicit_handled_fs_limits_rules_and_abi_zero_best_effort_is_empty() {
        let mut p = plan(1, false);
        p.handled_fs = Some(vec![A::WriteFile, A::ReadFile]);
        let rs = compile(&p, 7).unwrap();
        assert_eq!(rs.handled_fs, 0b110);
        assert_eq!(rs.paths[0].access, 0b100);

        p.handled_fs = Some(vec![A::WriteFile]);
        let rs = compile(&p, 7).unwrap();
        assert!(
            rs.paths.is_empty(),
            "a rule left with no handled right is dropped"
        );

        p.best_effort = true;
        p.handled_fs = None;
        let rs = compile(&p, 0).unwrap();
        assert!(rs.is_empty());
        enforce(&rs).unwrap();
    }

    #[test]
    fn log_flags_map_to_restrict_self_flags() {
        let mut p = plan(1, false);
        p.log = LogPlan {
            same_exec: false,
            new_exec: true,
            subdomains: false,
        };
        assert_eq!(compile(&p, 7).unwrap().restrict_flags, 0b111);
        assert!(compile(&p, 6).unwrap_err().is_abi());
    }

    fn create(handled_fs: u64, scoped: u64) -> io::Result<OwnedFd> {
        let attr = RulesetAttr {
            handled_access_fs: handled_fs,
            handled_access_net: 0,
            scoped,
        };
        // SAFETY: attr is live for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        let fd = sys::check(ret)?;
        // SAFETY: a fresh descriptor from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    #[test]
    fn kernel_accepts_exactly_what_its_abi_promises() {
        let abi = abi();
        if abi == 0 {
            let err = create(fs_rights_of_abi(1), 0).unwrap_err();
            assert!(matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            ));
            return;
        }
        create(fs_rights_of_abi(abi), 0).unwrap();
        if abi < 5 {
            let err = create(fs_rights_of_abi(5), 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
        if abi > 7 {
            return;
        }
        let err = create(1 << 16, 0).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EINVAL),
            "no right beyond ioctl_dev yet"
        );
        if abi >= ABI_SCOPE {
            create(0, SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET).unwrap();
        }
    }
}
