//! What this kernel offers: bpffs and tracefs (mounted when missing), the syscall exit
//! tracepoints, the syscall numbers of this architecture, the syscall entry points in the
//! kernel's BTF, and whether BPF trampolines (fexit) and BPF-LSM programs attach and run; and
//! [`SyscallHook`], the three ways the programs watch syscalls.

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use tracing::{debug, info};

use crate::error::PinError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Entries of the syscall table in read-only data (SYS_TABLE in events.h).
pub(crate) const SYS_TABLE: usize = 512;

/// Where the programs watch syscalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallHook {
    /// One fexit program on each watched syscall's entry point (`__x64_sys_<name>`), reading
    /// the registers it was given and its result, and one on `__secure_computing` for the
    /// calls seccomp refused. BPF trampolines, no tracepoint: other syscalls, and unwatched
    /// processes' syscalls other than the watched ones, run no program and take no slow path.
    /// Where the kernel refuses trampolines, the loader falls back to [`SyscallHook::RawSysExit`].
    Fexit,
    /// One program at the exit tracepoint of each watched syscall, reading the saved
    /// registers (kernel 5.15 and later); other syscalls run no program, but any syscall
    /// tracepoint puts every syscall of the node on the kernel's slow exit path.
    ExitTracepoints,
    /// One program at the raw sys_exit tracepoint, which hands over the registers: it runs at
    /// the exit of every syscall on the node for a table lookup.
    RawSysExit,
}

impl SyscallHook {
    /// The name logs and `palisade status` show.
    pub fn name(self) -> &'static str {
        match self {
            SyscallHook::Fexit => "fexit",
            SyscallHook::ExitTracepoints => "exit-tracepoints",
            SyscallHook::RawSysExit => "raw-sys-exit",
        }
    }

    /// The value the programs' read-only `syscall_hook` holds for this hook (monitor.bpf.c),
    /// which tells the holders that join what the loader chose.
    pub(crate) fn code(self) -> u32 {
        match self {
            SyscallHook::RawSysExit => 1,
            SyscallHook::ExitTracepoints => 2,
            SyscallHook::Fexit => 3,
        }
    }

    /// The hook of a `syscall_hook` value ([`SyscallHook::code`]).
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        [
            SyscallHook::RawSysExit,
            SyscallHook::ExitTracepoints,
            SyscallHook::Fexit,
        ]
        .into_iter()
        .find(|h| h.code() == code)
    }
}

impl std::fmt::Display for SyscallHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the learning programs see a learning container's capability checks (`bpf/learn.h`):
/// the loader takes the first this kernel offers (`capability_hook`), or none, and then no
/// capability is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityHook {
    /// fexit on `cap_capable` (a BPF trampoline: kernels from 5.10 where trampolines work).
    /// Before 5.13 a trampoline program attaches once only: there it stays attached from the
    /// node's first learning container until the set is unloaded (a set parked and attached
    /// again cannot attach it again: its learners' capabilities are then not observed).
    Fexit,
    /// The `capability:cap_capable` tracepoint of recent kernels, where trampolines do not work.
    Tracepoint,
}

impl CapabilityHook {
    /// The name logs and `palisade-monitor hold` show.
    pub fn name(self) -> &'static str {
        match self {
            CapabilityHook::Fexit => "fexit",
            CapabilityHook::Tracepoint => "tracepoint",
        }
    }

    /// Its program in `bpf/learn.h` (and its pin's name).
    pub(crate) fn program(self) -> &'static str {
        match self {
            CapabilityHook::Fexit => crate::set::pin::LEARN_CAP_FEXIT,
            CapabilityHook::Tracepoint => crate::set::pin::LEARN_CAP_TP,
        }
    }

    /// Its link is kept from its first attach until the set goes: a trampoline program
    /// attaches once only before 5.13.
    pub(crate) fn attaches_once(self) -> bool {
        self == CapabilityHook::Fexit && !release_at_least(5, 13)
    }
}

impl std::fmt::Display for CapabilityHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The capability hook this kernel offers: fexit on `cap_capable` where BPF trampolines work
/// (`trampolines`) and the kernel's BTF gives the function the four parameters the program
/// reads, else the `capability:cap_capable` tracepoint where the kernel has one, else none.
pub(crate) fn capability_hook(trampolines: impl FnOnce() -> bool) -> Option<CapabilityHook> {
    if function_params("cap_capable") == Some(4) && trampolines() {
        Some(CapabilityHook::Fexit)
    } else if tracepoint_exists("capability/cap_capable") {
        Some(CapabilityHook::Tracepoint)
    } else {
        None
    }
}

fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c is a valid NUL-terminated path and st points to writable statfs storage.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    // f_type is i64 on x86_64 but narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// Makes sure `bpffs` is a bpf filesystem, mounting one there when `mount` is set (nodes
/// without systemd, such as this CI, do not mount it).
pub(crate) fn ensure_bpffs(bpffs: &Path, mount: bool) -> Result<(), PinError> {
    let err = |source| PinError::Bpffs {
        path: bpffs.to_path_buf(),
        source,
    };
    if statfs_magic(bpffs).map_err(err)? == BPF_FS_MAGIC {
        return Ok(());
    }
    if !mount {
        return Err(PinError::NotBpffs(bpffs.to_path_buf()));
    }
    let target = CString::new(bpffs.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    info!(path = %bpffs.display(), "mounted bpffs");
    Ok(())
}

/// The syscall tracepoints are found by their ids under tracefs; mount it at its usual place
/// when neither it nor debugfs' copy is there (minimal hosts mount neither).
pub(crate) fn ensure_tracefs(mount: bool) -> Result<(), PinError> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    if !mount {
        return Ok(());
    }
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(PinError::Bpffs {
            path: tracing.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

pub(crate) fn tracepoint_exists(event: &str) -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|base| Path::new(base).join(event).exists())
}

/// Watched syscalls without an exit tracepoint on this kernel (a kernel without modules has
/// none for init_module): not reported by the exit-tracepoint programs. The loader attaches
/// to the others; the raw sys_exit program sees every syscall. (The fexit programs' gaps are
/// read from the pinned set: [`missing_entry_points`] at load.)
pub(crate) fn missing_tracepoints() -> Vec<String> {
    crate::event::WATCHED_SYSCALLS
        .iter()
        .filter(|s| !tracepoint_exists(&format!("syscalls/sys_exit_{s}")))
        .map(|s| s.to_string())
        .collect()
}

/// The prefix of a syscall's entry point, the function the syscall table calls with the
/// registers (`SYSCALL_ENTRY` in syscalls.h).
#[cfg(target_arch = "x86_64")]
pub(crate) const SYSCALL_ENTRY: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
pub(crate) const SYSCALL_ENTRY: &str = "__arm64_sys_";

/// The function names (fexit targets) among `targets` that the kernel's BTF does not list:
/// their programs cannot be loaded here (a kernel without modules may lack
/// `__x64_sys_init_module`). All of them when the kernel's BTF cannot be read.
pub(crate) fn missing_entry_points<'a>(targets: &[&'a str]) -> Vec<&'a str> {
    let btf = match libbpf_rs::btf::Btf::from_vmlinux() {
        Ok(b) => b,
        Err(e) => {
            debug!(error = %e, "kernel btf unreadable: no fexit targets");
            return targets.to_vec();
        }
    };
    targets
        .iter()
        .filter(|t| {
            btf.type_by_name::<libbpf_rs::btf::types::Func<'_>>(t)
                .is_none()
        })
        .copied()
        .collect()
}

/// Syscall numbers of the running architecture, by name, with their `enum sys_kind` value
/// (events.h): the programs learn them through read-only data.
const SYSCALL_NUMBERS: &[(&str, libc::c_long)] = &[
    ("openat", libc::SYS_openat),
    ("connect", libc::SYS_connect),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("socket", libc::SYS_socket),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("setresuid", libc::SYS_setresuid),
    ("setresgid", libc::SYS_setresgid),
    ("capset", libc::SYS_capset),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("ptrace", libc::SYS_ptrace),
    ("mount", libc::SYS_mount),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("bpf", libc::SYS_bpf),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
];

/// The syscall number -> kind table the programs look every syscall up in.
pub(crate) fn syscall_kinds() -> [u8; SYS_TABLE] {
    let mut table = [0u8; SYS_TABLE];
    for (kind, (_, nr)) in SYSCALL_NUMBERS.iter().enumerate() {
        if let Some(slot) = usize::try_from(*nr).ok().and_then(|n| table.get_mut(n)) {
            *slot = kind as u8 + 1;
        }
    }
    table
}

/// Whether the running kernel's release (`/proc/sys/kernel/osrelease`) is `major.minor` or
/// later; an unreadable release counts as the newest.
pub(crate) fn release_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return true;
    };
    release_is_at_least(&release, major, minor)
}

fn release_is_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Where the kernel lists its active LSMs, in the order it calls them.
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Whether `bpf` is among the active LSMs of a `/sys/kernel/security/lsm` text.
fn lists_bpf(lsms: &str) -> bool {
    lsms.trim().split(',').any(|l| l == "bpf")
}

/// Whether BPF-LSM is in force on this kernel: `bpf` is among the active LSMs, and a BPF-LSM
/// program, loaded and attached, is then seen to run when this process opens a file. Both
/// are needed: a kernel may refuse the program while listing `bpf`, and Debian 11's 5.10 loads
/// and attaches it without `bpf` in its list, and never calls it (enforcement claimed there
/// would be enforcement that does not exist).
pub(crate) fn probe_lsm() -> bool {
    match fs::read_to_string(LSM_LIST) {
        Ok(lsms) if lists_bpf(&lsms) => {}
        Ok(lsms) => {
            debug!(
                lsms = lsms.trim(),
                "bpf-lsm unavailable: bpf is not an active lsm"
            );
            return false;
        }
        Err(e) => {
            debug!(error = %e, "bpf-lsm unavailable: cannot read {LSM_LIST}");
            return false;
        }
    }
    seen_to_run(Probe::Lsm)
}

/// Whether BPF-LSM is in force on this node, as the monitor's loader decides it (`probe_lsm`:
/// `bpf` among the active LSMs and a probe program seen to run). Needs the rights to load BPF
/// programs (root); without them the answer is `false`.
pub fn bpf_lsm_in_force() -> bool {
    probe_lsm()
}

/// The probe object's two programs, each loaded alone and watched for one open.
#[derive(Clone, Copy)]
enum Probe {
    /// On BPF-LSM's `file_open` hook.
    Lsm,
    /// fexit on the openat entry point (a BPF trampoline).
    Fexit,
}

/// Whether `probe`'s program, loaded and attached, is seen to run; why not goes to the debug
/// log.
fn seen_to_run(probe: Probe) -> bool {
    let what = match probe {
        Probe::Lsm => "bpf-lsm",
        Probe::Fexit => "fexit",
    };
    match probe_runs(probe) {
        Ok(true) => true,
        Ok(false) => {
            debug!("{what} unavailable: the attached probe program never ran");
            false
        }
        Err(e) => {
            debug!(error = %e, "{what} unavailable");
            false
        }
    }
}

/// Loads and attaches `probe`'s program alone, opens a file, and says whether the program saw
/// it.
fn probe_runs(probe: Probe) -> Result<bool, libbpf_rs::Error> {
    let mut storage = MaybeUninit::uninit();
    let mut open = crate::skel::probe::ProbeSkelBuilder::default().open(&mut storage)?;
    match probe {
        Probe::Lsm => open.progs.probe_fexit.set_autoload(false),
        Probe::Fexit => open.progs.probe_lsm.set_autoload(false),
    }
    let mut skel = open.load()?;
    let _link = match probe {
        Probe::Lsm => skel.progs.probe_lsm.attach()?,
        Probe::Fexit => skel.progs.probe_fexit.attach()?,
    };
    let Some(bss) = skel.maps.bss_data.as_deref_mut() else {
        return Ok(false);
    };
    bss.probe_tgid = std::process::id();
    // The trigger: any open by this process passes both hooks.
    let opened = fs::File::open("/proc/self/stat").is_ok();
    let hits = match probe {
        Probe::Lsm => &raw const bss.probe_hits,
        Probe::Fexit => &raw const bss.probe_fexit_hits,
    };
    // SAFETY: a plain read of a u64 in the mapped .bss, which the program writes to.
    let hits = unsafe { std::ptr::read_volatile(hits) };
    Ok(opened && hits > 0)
}

/// How many parameters the kernel's BTF gives function `name`, when it lists it
/// (`__secure_computing` took one until 7.x, none since).
pub(crate) fn function_params(name: &str) -> Option<usize> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux().ok()?;
    let func = btf.type_by_name::<libbpf_rs::btf::types::Func<'_>>(name)?;
    let proto = libbpf_rs::btf::types::FuncProto::try_from(func.next_type()?).ok()?;
    Some(proto.len())
}

/// Whether BPF trampolines work on this kernel: a probe fexit program on the openat entry
/// point loads, attaches and is seen to run when this process opens a file. Kernels built
/// without a usable ftrace (this CI machine's 6.18 refuses the attach with EPERM) fall back
/// to the raw sys_exit tracepoint.
pub(crate) fn probe_trampolines() -> bool {
    seen_to_run(Probe::Fexit)
}

/// Whether the monitor's syscall programs can sit on BPF trampolines on this node (fexit on
/// the syscalls' entry points), as the loader decides it (`probe_trampolines`). Needs the
/// rights to load BPF programs (root); without them the answer is `false`.
pub fn bpf_trampolines_work() -> bool {
    probe_trampolines()
}

/// [`probe_lsm`], asked once per boot ([`cached_per_boot`]).
pub(crate) fn probe_lsm_cached(root: &Path) -> bool {
    cached_per_boot(root, "bpf-lsm", probe_lsm)
}

/// [`probe_trampolines`], asked once per boot ([`cached_per_boot`]).
pub(crate) fn probe_trampolines_cached(root: &Path) -> bool {
    cached_per_boot(root, "fexit", probe_trampolines)
}

/// A probe asked once per boot: the answer is kept as an empty directory under the pin root,
/// named after the probe and the boot id (bpffs is emptied by a reboot anyway; the id also
/// covers a pin root elsewhere). A probe loads a program and parses the kernel's BTF:
/// milliseconds on every first pod of a node otherwise.
fn cached_per_boot(root: &Path, what: &str, probe: fn() -> bool) -> bool {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if boot.is_empty() {
        return probe();
    }
    let marker = |yes: bool| root.join(format!("{what}-{}-{boot}", if yes { "yes" } else { "no" }));
    for yes in [true, false] {
        if marker(yes).is_dir() {
            return yes;
        }
    }
    let answer = probe();
    // Answers of earlier boots (a pin root outside bpffs keeps them) are dropped.
    let earlier = |name: &str| {
        ["yes", "no"]
            .iter()
            .any(|a| name.starts_with(&format!("{what}-{a}-")))
    };
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if earlier(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
    if let Err(e) = fs::create_dir(marker(answer)) {
        debug!(error = %e, probe = what, "probe result not cached");
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_by_major_then_minor() {
        assert!(!release_is_at_least("5.10.0-46-amd64", 5, 13));
        assert!(release_is_at_least("6.1.0-50-amd64", 5, 13));
        assert!(release_is_at_least("6.12.118+deb13-amd64", 5, 15));
        assert!(release_is_at_least("5.15.0", 5, 15));
        assert!(!release_is_at_least("4.19.0", 5, 10));
    }

    #[test]
    fn hook_codes_round_trip_and_zero_is_none() {
        for h in [
            SyscallHook::Fexit,
            SyscallHook::ExitTracepoints,
            SyscallHook::RawSysExit,
        ] {
            assert_eq!(SyscallHook::from_code(h.code()), Some(h));
        }
        assert_eq!(SyscallHook::from_code(0), None);
        assert_eq!(SyscallHook::Fexit.to_string(), "fexit");
    }

    /// The kernel's BTF names the entry points of the watched syscalls wherever the fexit
    /// programs can run; a name it does not have is reported missing.
    #[test]
    fn entry_points_missing_from_the_btf_are_named() {
        let openat = format!("{SYSCALL_ENTRY}openat");
        let bogus = format!("{SYSCALL_ENTRY}no_such_call");
        let missing = missing_entry_points(&[openat.as_str(), bogus.as_str()]);
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert_eq!(missing, [bogus.as_str()]);
        } else {
            assert_eq!(missing.len(), 2);
        }
    }

    #[test]
    fn bpf_must_be_named_in_the_lsm_list() {
        assert!(lists_bpf(
            "lockdown,capability,landlock,yama,apparmor,bpf\n"
        ));
        assert!(!lists_bpf("lockdown,capability,yama,apparmor"));
        assert!(!lists_bpf("bpfx,capability"));
    }

    /// The running kernel: the probe claims BPF-LSM only where `bpf` is an active LSM.
    #[test]
    fn the_probe_claims_bpf_lsm_only_with_bpf_in_the_lsm_list() {
        let listed = fs::read_to_string(LSM_LIST).is_ok_and(|l| lists_bpf(&l));
        assert!(
            !probe_lsm() || listed,
            "bpf-lsm claimed without bpf in {LSM_LIST}"
        );
    }
}
