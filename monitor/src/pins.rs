//! One set of programs and maps per node, pinned under bpffs and shared by every shim: the
//! first holder loads and pins, each holder registers in the pinned `holders` map, and the last
//! live holder out unpins everything. A holder whose process is dead does not count.

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Program};
use tracing::{info, warn};

use crate::error::{load_err, PinError};
use crate::kernel::{
    ensure_tracefs, probe_lsm, probe_lsm_cached, syscall_kinds, tracepoint_exists, SyscallHook,
};
use crate::raw::{bytes_of, read};
use crate::skel::monitor::{types, MonitorSkel, MonitorSkelBuilder};

pub(crate) const MAX_RINGS: u32 = 256;

/// Maps user space reaches through pins (`procs` only to empty it when the set is parked).
const MAPS: &[&str] = &[
    "containers",
    "rings",
    "deny_exec",
    "deny_connect",
    "holders",
    "sock_rules",
    "procs",
];

/// The cgroup sock_addr programs, attached per container, with their attach types.
pub(crate) const CGROUP_PROGS: &[(&str, libbpf_rs::libbpf_sys::bpf_attach_type)] = &[
    ("connect4", libbpf_rs::libbpf_sys::BPF_CGROUP_INET4_CONNECT),
    ("connect6", libbpf_rs::libbpf_sys::BPF_CGROUP_INET6_CONNECT),
    ("sendmsg4", libbpf_rs::libbpf_sys::BPF_CGROUP_UDP4_SENDMSG),
    ("sendmsg6", libbpf_rs::libbpf_sys::BPF_CGROUP_UDP6_SENDMSG),
];

/// The cgroup sock program checking socket creation, attached per container with socket
/// rules; optional: a kernel refusing it still gets the rest.
pub(crate) const SOCK_PROG: (&str, libbpf_rs::libbpf_sys::bpf_attach_type) = (
    "sock_create",
    libbpf_rs::libbpf_sys::BPF_CGROUP_INET_SOCK_CREATE,
);

/// The programs attached per container (to its cgroup), not by the loader.
fn attached_per_container(name: &str) -> bool {
    name == SOCK_PROG.0 || CGROUP_PROGS.iter().any(|(n, _)| *n == name)
}

/// Handles on the pinned maps and programs, as every holder sees them.
#[derive(Debug)]
pub(crate) struct NodeMaps {
    /// The read-only data the programs were loaded with.
    pub config: types::rodata,
    /// The exec deny rules are enforced by the BPF-LSM program (attached and pinned).
    pub lsm: bool,
    /// The syscall program the loader chose (told by `task_btf` in the pinned config).
    pub syscall_hook: SyscallHook,
    pub containers: MapHandle,
    pub rings: MapHandle,
    pub deny_exec: MapHandle,
    pub deny_connect: MapHandle,
    pub holders: MapHandle,
    pub sock_rules: MapHandle,
    /// The pinned `sock_create` program, when this kernel loaded it.
    pub sock_create: Option<OwnedFd>,
    pub cgroup_progs: Vec<(
        &'static str,
        libbpf_rs::libbpf_sys::bpf_attach_type,
        OwnedFd,
    )>,
}

/// Exclusive lock over the pin root; dropping it closes the fd and releases the lock.
pub(crate) struct RootLock {
    _fd: OwnedFd,
}

/// The directory of this build's pins: the object's hash is part of the name, so shims built
/// from different programs never share maps with mismatched layouts.
pub(crate) fn version_dir(root: &Path) -> PathBuf {
    // The object's FNV-1a hash is taken by build.rs: hashing it here would page the whole
    // embedded object into every shim that only joins.
    let hash = env!("PALISADE_BPF_HASH");
    // bpffs refuses names with dots.
    let version = env!("CARGO_PKG_VERSION").replace('.', "_");
    root.join(format!("v{version}-{hash}"))
}

/// Takes the node-wide lock: flock on the pin root directory (bpffs holds no regular files,
/// and the root itself is never removed, so it is a stable lock object).
pub(crate) fn lock_root(root: &Path) -> Result<RootLock, PinError> {
    fs::create_dir_all(root).map_err(|source| PinError::Dir {
        path: root.to_path_buf(),
        source,
    })?;
    let c = CString::new(root.as_os_str().as_bytes()).map_err(|_| PinError::Dir {
        path: root.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: c is a valid path; the returned fd is checked before use.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(PinError::Lock {
            path: root.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(PinError::Lock {
            path: root.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(RootLock { _fd: fd })
}

/// How a handle came by the node's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// No set was pinned: this handle loaded (verified) and attached the programs.
    Loaded,
    /// The set was parked (loaded, detached) by the last holder before: this handle attached
    /// the pinned programs again, without loading anything.
    Reattached,
    /// Another live holder had the programs attached: this handle only joined.
    Joined,
}

impl Opened {
    /// The name logs show.
    pub fn name(self) -> &'static str {
        match self {
            Opened::Loaded => "loaded",
            Opened::Reattached => "reattached",
            Opened::Joined => "joined",
        }
    }
}

/// Opens the pinned maps and programs of `dir`, loading and pinning them first when no
/// complete set is there, and attaching them again when the set is parked. Must be called
/// under the root lock. Returns how it came by them.
/// `hook` is the syscall program asked for; the exit-tracepoint one falls back to the raw
/// sys_exit one on kernels before 5.15.
pub(crate) fn load_or_open(
    dir: &Path,
    enforce: bool,
    mount: bool,
    hook: SyscallHook,
) -> Result<(NodeMaps, Opened), PinError> {
    let (maps, loaded, _) = load_or_open_with(dir, enforce, mount, hook, |_: &Maps| ())?;
    Ok((maps, loaded))
}

/// The `holders` and `rings` maps of a set just loaded, for [`load_or_open_with`]'s set-up.
pub(crate) struct Maps {
    pub holders: MapHandle,
    pub rings: MapHandle,
}

/// [`load_or_open`], and when this call loads, `beside` runs on the new `holders` and `rings`
/// maps in a thread of its own while the programs are attached and pinned (the loader's own
/// ring: its insertion waits for an RCU grace period, which then overlaps the attaching).
/// Returns `beside`'s result when it ran; a failed load drops it.
pub(crate) fn load_or_open_with<R: Send>(
    dir: &Path,
    enforce: bool,
    mount: bool,
    hook: SyscallHook,
    beside: impl FnOnce(&Maps) -> R + Send,
) -> Result<(NodeMaps, Opened, Option<R>), PinError> {
    // `holders` is pinned before `config`, which comes last: its presence marks a complete set.
    if is_parked(dir) {
        match reattach(dir) {
            Ok(()) => return Ok((open_pins(dir)?, Opened::Reattached, None)),
            Err(e) => {
                // Links attached before the failure go with the set; a fresh load follows.
                warn!(dir = %dir.display(), error = %e, "parked programs not attached again, loading anew");
                remove_pins(dir)?;
            }
        }
    }
    let (loaded, early) = if dir.join("maps/config").exists() {
        (Opened::Joined, None)
    } else {
        if dir.exists() {
            warn!(dir = %dir.display(), "incomplete pin dir (a loader died midway), removing it");
            remove_pins(dir)?;
        }
        ensure_tracefs(mount)?;
        match load_and_pin(dir, enforce, hook, beside) {
            Ok(r) => {
                if let Some(root) = dir.parent() {
                    remove_other_builds_parked(root);
                }
                (Opened::Loaded, Some(r))
            }
            Err(e) => {
                // Leave no half-pinned set behind for the next holder to trip over.
                let _ = remove_pins(dir);
                return Err(e);
            }
        }
    };
    Ok((open_pins(dir)?, loaded, early))
}

/// What a load attempt asks of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    lsm: bool,
    source_check: bool,
    sock: bool,
    hook: SyscallHook,
}

fn open_and_load(
    storage: &mut MaybeUninit<libbpf_rs::OpenObject>,
    enforce: bool,
    attempt: Attempt,
) -> Result<MonitorSkel<'_>, PinError> {
    let source_check = attempt.source_check;
    let started = Instant::now();
    let mut open = MonitorSkelBuilder::default()
        .open(storage)
        .map_err(load_err("open"))?;
    let opened = started.elapsed();
    if let Some(rodata) = open.maps.rodata_data.as_mut() {
        rodata.enforce = u32::from(enforce);
        rodata.source_check = u32::from(source_check);
        rodata.sys_kinds = syscall_kinds();
        rodata.task_btf = u32::from(attempt.hook == SyscallHook::ExitTracepoints);
    }
    for mut prog in open.open_object_mut().progs_mut() {
        if prog.section().to_string_lossy().starts_with("lsm/") {
            prog.set_autoload(attempt.lsm);
        }
        if prog.section().to_string_lossy() == "cgroup/sock_create" {
            prog.set_autoload(attempt.sock);
        }
        let name = prog.name().to_string_lossy().into_owned();
        if name == "on_sys_exit" {
            prog.set_autoload(attempt.hook == SyscallHook::ExitTracepoints);
        } else if name == "on_sys_exit_raw" {
            prog.set_autoload(attempt.hook == SyscallHook::RawSysExit);
        }
    }
    let skel = open.load().map_err(load_err("load"))?;
    // Open parses the object's own BTF; load parses the kernel's (CO-RE), creates the maps
    // and has every program verified.
    info!(
        open_ms = ms(opened),
        load_ms = ms(started.elapsed() - opened),
        "monitor object loaded"
    );
    Ok(skel)
}

/// Milliseconds with a fraction, for the timings in the logs.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_and_pin<R: Send>(
    dir: &Path,
    enforce: bool,
    hook: SyscallHook,
    beside: impl FnOnce(&Maps) -> R + Send,
) -> Result<R, PinError> {
    let started = Instant::now();
    for sub in ["links", "progs", "maps"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(|source| PinError::Dir { path: p, source })?;
    }
    // Ask for the most, then less: BPF-LSM where the probe says it works, fromSource in the
    // sock_addr hooks, the sock_create program; a kernel refusing one still gets the rest.
    // For each, the syscall program asked for; when that is the exit-tracepoint one, then the
    // raw sys_exit one a kernel before 5.15 takes (the first refuses to verify there: unknown
    // helper).
    let lsm = dir.parent().map_or_else(probe_lsm, probe_lsm_cached);
    let probed = started.elapsed();
    let hooks: &[SyscallHook] = match hook {
        SyscallHook::RawSysExit => &[SyscallHook::RawSysExit],
        SyscallHook::ExitTracepoints => &[SyscallHook::ExitTracepoints, SyscallHook::RawSysExit],
    };
    let mut attempts = Vec::new();
    for (lsm, source_check, sock) in [
        (lsm, true, true),
        (false, true, true),
        (false, false, true),
        (false, false, false),
    ] {
        for hook in hooks {
            let attempt = Attempt {
                lsm,
                source_check,
                sock,
                hook: *hook,
            };
            if !attempts.contains(&attempt) {
                attempts.push(attempt);
            }
        }
    }
    let mut storages: Vec<MaybeUninit<libbpf_rs::OpenObject>> =
        attempts.iter().map(|_| MaybeUninit::uninit()).collect();
    let mut loaded = None;
    let mut last_err = None;
    for (attempt, storage) in attempts.iter().zip(storages.iter_mut()) {
        match open_and_load(storage, enforce, *attempt) {
            Ok(skel) => {
                loaded = Some((skel, *attempt));
                break;
            }
            Err(e) => {
                info!(?attempt, error = %e, "load refused, asking for less");
                last_err = Some(e);
            }
        }
    }
    let (skel, attempt) = match (loaded, last_err) {
        (Some(loaded), _) => loaded,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(PinError::Load {
                what: "load".to_string(),
                source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
            })
        }
    };
    let verified = started.elapsed();
    for name in MAPS {
        let map = skel
            .object()
            .maps()
            .find(|m| m.name() == *name)
            .ok_or_else(|| PinError::Load {
                what: format!("map {name}"),
                source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
            })?;
        pin_fd(map.as_fd(), &dir.join("maps").join(name))?;
    }
    let pinned_map = |name: &str| {
        let path = dir.join("maps").join(name);
        MapHandle::from_pinned_path(&path).map_err(|source| PinError::Pin { path, source })
    };
    let early = Maps {
        holders: pinned_map("holders")?,
        rings: pinned_map("rings")?,
    };
    let beside = Mutex::new(Some(beside));
    let run = || {
        beside
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|f| f(&early))
    };
    let (attached, ran) = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("palisade-ring-setup".into())
            .spawn_scoped(scope, run)
            .ok();
        let attached = attach_and_pin(&skel, dir);
        (attached, thread.and_then(|t| t.join().ok()).flatten())
    });
    attached?;
    // A set-up thread that could not start leaves the set-up to this one.
    let Some(early) = ran.or_else(run) else {
        return Err(PinError::Load {
            what: "holder set-up beside the attaching".to_string(),
            source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::Interrupted)),
        });
    };
    // The read-only configuration, so that later holders learn what the loader chose.
    let rodata = skel
        .object()
        .maps()
        .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
        .ok_or_else(|| PinError::Load {
            what: "map .rodata".to_string(),
            source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
        })?;
    pin_fd(rodata.as_fd(), &dir.join("maps").join("config"))?;
    let pinned = started.elapsed();
    drop(skel);
    info!(
        dir = %dir.display(),
        probe_ms = ms(probed),
        load_ms = ms(verified - probed),
        attach_pin_ms = ms(pinned - verified),
        close_ms = ms(started.elapsed() - pinned),
        syscall_hook = %attempt.hook,
        bpf_lsm = attempt.lsm,
        from_source = attempt.source_check,
        sock_create = attempt.sock,
        "monitor programs loaded and pinned"
    );
    Ok(early)
}

/// Attaches the loaded programs (the syscall program to each watched syscall's exit
/// tracepoint) and pins their links, and pins the cgroup programs attached per container.
fn attach_and_pin(skel: &MonitorSkel<'_>, dir: &Path) -> Result<(), PinError> {
    let started = Instant::now();
    // How long the exit tracepoints took, the first of them apart (it enables the kernel's
    // syscall tracing) and the slowest: for docs/benchmarks.md.
    let mut first: Option<Duration> = None;
    let mut slowest = (Duration::ZERO, String::new());
    let mut tracepoints = Duration::ZERO;
    for prog in skel.object().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        if !prog.autoload() {
            continue;
        }
        if attached_per_container(&name) {
            pin_fd(prog.as_fd(), &dir.join("progs").join(&name))?;
        } else if name == "on_sys_exit" {
            // One program behind every syscall's exit tracepoint; a syscall this kernel has
            // no tracepoint for (no modules, say) is not watched.
            for sys in crate::event::WATCHED_SYSCALLS {
                let event = format!("sys_exit_{sys}");
                if !tracepoint_exists(&format!("syscalls/{event}")) {
                    warn!(tracepoint = %event, "tracepoint missing on this kernel, not watched");
                    continue;
                }
                let attaching = Instant::now();
                let mut link = prog
                    .attach_tracepoint(libbpf_rs::TracepointCategory::Syscalls, &event)
                    .map_err(load_err(format!("attach {name} to {event}")))?;
                let took = attaching.elapsed();
                first.get_or_insert(took);
                tracepoints += took;
                if took > slowest.0 {
                    slowest = (took, event.clone());
                }
                let path = dir.join("links").join(&event);
                link.pin(&path)
                    .map_err(|source| PinError::Pin { path, source })?;
            }
        } else {
            // Pinned too, so that a parked set can be attached again without a load.
            pin_fd(prog.as_fd(), &dir.join("progs").join(&name))?;
            let mut link = prog.attach().map_err(load_err(format!("attach {name}")))?;
            let path = dir.join("links").join(&name);
            link.pin(&path)
                .map_err(|source| PinError::Pin { path, source })?;
        }
    }
    info!(
        total_ms = ms(started.elapsed()),
        tracepoints_ms = ms(tracepoints),
        first_tracepoint_ms = ms(first.unwrap_or_default()),
        slowest_tracepoint = %slowest.1,
        slowest_tracepoint_ms = ms(slowest.0),
        "monitor programs attached"
    );
    Ok(())
}

fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<(), PinError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| PinError::Pin {
        path: path.to_path_buf(),
        source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::InvalidInput)),
    })?;
    // SAFETY: valid fd and NUL-terminated path.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if rc != 0 {
        return Err(PinError::Pin {
            path: path.to_path_buf(),
            source: libbpf_rs::Error::from(io::Error::last_os_error()),
        });
    }
    Ok(())
}

fn open_pins(dir: &Path) -> Result<NodeMaps, PinError> {
    let map = |name: &str| {
        let path = dir.join("maps").join(name);
        MapHandle::from_pinned_path(&path).map_err(|source| PinError::Pin { path, source })
    };
    let mut cgroup_progs = Vec::new();
    for (name, attach) in CGROUP_PROGS {
        let path = dir.join("progs").join(name);
        let fd =
            Program::fd_from_pinned_path(&path).map_err(|source| PinError::Pin { path, source })?;
        cgroup_progs.push((*name, *attach, fd));
    }
    let sock_path = dir.join("progs").join(SOCK_PROG.0);
    let sock_create = if sock_path.exists() {
        Some(
            Program::fd_from_pinned_path(&sock_path).map_err(|source| PinError::Pin {
                path: sock_path,
                source,
            })?,
        )
    } else {
        None
    };
    let config = map("config")?
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|source| PinError::Pin {
            path: dir.join("maps/config"),
            source,
        })?
        .and_then(|v| read::<types::rodata>(&v))
        .ok_or_else(|| PinError::Pin {
            path: dir.join("maps/config"),
            source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
        })?;
    let syscall_hook = if config.task_btf != 0 {
        SyscallHook::ExitTracepoints
    } else {
        SyscallHook::RawSysExit
    };
    Ok(NodeMaps {
        lsm: dir.join("links/lsm_exec").exists(),
        syscall_hook,
        config,
        containers: map("containers")?,
        rings: map("rings")?,
        deny_exec: map("deny_exec")?,
        deny_connect: map("deny_connect")?,
        holders: map("holders")?,
        sock_rules: map("sock_rules")?,
        sock_create,
        cgroup_progs,
    })
}

/// Whether `dir` holds a parked set: complete, no link pinned, its programs pinned.
pub(crate) fn is_parked(dir: &Path) -> bool {
    let no_links = fs::read_dir(dir.join("links")).map_or(true, |mut e| e.next().is_none());
    dir.join("maps/config").exists() && no_links && dir.join("progs/on_exec").exists()
}

/// Parks the set of `dir` when no holder is left: its links are unpinned, which detaches every
/// program (nothing runs on any syscall of the node any more), while the loaded programs and
/// their maps stay pinned for the next holder to attach again without loading and verifying
/// them (docs/monitor.md, "Parked programs"). The processes the programs remembered are
/// forgotten, as their exits will not be seen. Only for a set of the raw sys_exit program: the
/// exit-tracepoint program's links are perf events, which cannot be attached again from a pin
/// here. Returns false, having done nothing, for a set whose programs are not pinned (loaded
/// by a build before parking), which the caller then removes.
pub(crate) fn park(dir: &Path) -> Result<bool, PinError> {
    if !dir.join("progs/on_exec").exists() {
        return Ok(false);
    }
    unpin_entries(&dir.join("links"))?;
    let procs = dir.join("maps/procs");
    if let Ok(map) = MapHandle::from_pinned_path(&procs) {
        for key in map.keys().collect::<Vec<_>>() {
            let _ = map.delete(&key);
        }
    }
    Ok(true)
}

/// Attaches the programs of a parked set again, from their pins (the BTF-typed tracepoint and
/// LSM programs: the cgroup ones are attached per container anyway), and pins the new links.
fn reattach(dir: &Path) -> Result<(), PinError> {
    let started = Instant::now();
    let progs = dir.join("progs");
    let entries = fs::read_dir(&progs).map_err(|source| PinError::Dir {
        path: progs.clone(),
        source,
    })?;
    let mut attached = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if attached_per_container(&name) {
            continue;
        }
        let path = e.path();
        let prog = Program::fd_from_pinned_path(&path).map_err(|source| PinError::Pin {
            path: path.clone(),
            source,
        })?;
        // A BTF-typed program names its own attach point: no tracepoint name is passed.
        // SAFETY: a valid program fd and a null name, which the kernel accepts for these.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), prog.as_raw_fd())
        };
        if fd < 0 {
            return Err(PinError::Load {
                what: format!("attach parked {name} again"),
                source: libbpf_rs::Error::from(io::Error::from_raw_os_error(-fd)),
            });
        }
        // SAFETY: the kernel just returned this link fd, owned by nobody else.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        pin_fd(link.as_fd(), &dir.join("links").join(&name))?;
        attached += 1;
    }
    info!(
        dir = %dir.display(),
        programs = attached,
        attach_ms = ms(started.elapsed()),
        "parked monitor programs attached again"
    );
    Ok(())
}

/// The parked sets under `root`, of every build and mode, sorted.
pub(crate) fn parked_sets(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut parked: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|source| PinError::Dir {
            path: root.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_parked(p))
        .collect();
    parked.sort();
    Ok(parked)
}

/// Removes the parked sets of other builds under `root` (no holder of this build will attach
/// them again); this build's sets of other modes stay.
pub(crate) fn remove_other_builds_parked(root: &Path) {
    let this_build = version_dir(root)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for path in parked_sets(root).unwrap_or_default() {
        let ours = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&this_build));
        if !ours {
            match remove_pins(&path) {
                Ok(()) => info!(dir = %path.display(), "removed another build's parked programs"),
                Err(e) => warn!(error = %e, "remove another build's parked programs"),
            }
        }
    }
}

/// Removes every pin of `dir` and the directory: links first (detaching the programs), then
/// programs and maps. Objects still referenced by an open fd live on until it is closed.
pub(crate) fn remove_pins(dir: &Path) -> Result<(), PinError> {
    for sub in ["links", "progs", "maps"] {
        let p = dir.join(sub);
        unpin_entries(&p)?;
        if p.exists() {
            fs::remove_dir(&p).map_err(|source| PinError::Dir { path: p, source })?;
        }
    }
    if dir.exists() {
        fs::remove_dir(dir).map_err(|source| PinError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Unpins every entry of the directory `dir` (none when it does not exist).
fn unpin_entries(dir: &Path) -> Result<(), PinError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            fs::remove_file(e.path()).map_err(|source| PinError::Dir {
                path: e.path(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat): with the
/// pid, it names one process even after the pid is reused.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn holder_alive(h: &types::holder) -> bool {
    h.pid != 0 && start_time(h.pid) == Some(h.start_time)
}

pub(crate) fn read_holder(maps: &NodeMaps, idx: u32) -> types::holder {
    holder_at(&maps.holders, idx)
}

fn holder_at(holders: &MapHandle, idx: u32) -> types::holder {
    holders
        .lookup(&idx.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .and_then(|v| read::<types::holder>(&v))
        .unwrap_or_default()
}

/// Frees a ring index: its ring, its containers and their deny entries, its holder entry.
pub(crate) fn release_index(maps: &NodeMaps, idx: u32) {
    let _ = maps.rings.delete(&idx.to_ne_bytes());
    let owned = |slot: u32| slot >> 16 == idx;
    for key in maps.containers.keys().collect::<Vec<_>>() {
        let info = maps
            .containers
            .lookup(&key, MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| read::<types::container_info>(&v));
        if info.is_some_and(|i| i.ring == idx) {
            let _ = maps.containers.delete(&key);
        }
    }
    for key in maps.deny_exec.keys().collect::<Vec<_>>() {
        if read::<types::exec_key>(&key).is_some_and(|k| owned(k.slot)) {
            let _ = maps.deny_exec.delete(&key);
        }
    }
    for key in maps.deny_connect.keys().collect::<Vec<_>>() {
        let slot = key
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        if slot.is_some_and(owned) {
            let _ = maps.deny_connect.delete(&key);
        }
    }
    for key in maps.sock_rules.keys().collect::<Vec<_>>() {
        if read::<types::sock_key>(&key).is_some_and(|k| owned(k.slot)) {
            let _ = maps.sock_rules.delete(&key);
        }
    }
    let empty = types::holder::default();
    let _ = maps
        .holders
        .update(&idx.to_ne_bytes(), bytes_of(&empty), MapFlags::ANY);
}

/// Releases the indices of dead holders; returns how many holders are alive.
pub(crate) fn reap(maps: &NodeMaps) -> u32 {
    let mut alive = 0;
    for idx in 0..MAX_RINGS {
        let h = read_holder(maps, idx);
        if h.pid == 0 {
            continue;
        }
        if holder_alive(&h) {
            alive += 1;
        } else {
            info!(
                pid = h.pid,
                index = idx,
                "releasing the ring of a dead holder"
            );
            release_index(maps, idx);
        }
    }
    alive
}

/// Claims a free holder index for the calling process.
pub(crate) fn claim(holders: &MapHandle) -> Result<u32, PinError> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    for idx in 0..MAX_RINGS {
        if holder_at(holders, idx).pid == 0 {
            let h = types::holder {
                pid,
                pad: 0,
                start_time: start,
            };
            holders
                .update(&idx.to_ne_bytes(), bytes_of(&h), MapFlags::ANY)
                .map_err(|source| PinError::Pin {
                    path: PathBuf::from("holders"),
                    source,
                })?;
            return Ok(idx);
        }
    }
    Err(PinError::Full(MAX_RINGS))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load ladder on the running kernel: the LSM program loads exactly when the probe
    /// says BPF-LSM works, the attempt without it always loads, and so does the raw sys_exit
    /// variant (the one kernels before 5.15 get).
    #[test]
    fn lsm_attempt_follows_the_probe_and_the_fallbacks_load() {
        let lsm = probe_lsm();
        let mut a = MaybeUninit::uninit();
        let with_lsm = open_and_load(
            &mut a,
            true,
            Attempt {
                lsm: true,
                source_check: true,
                sock: true,
                hook: SyscallHook::ExitTracepoints,
            },
        );
        assert_eq!(with_lsm.is_ok(), lsm, "probe said bpf-lsm = {lsm}");
        for hook in [SyscallHook::ExitTracepoints, SyscallHook::RawSysExit] {
            let mut b = MaybeUninit::uninit();
            let without = open_and_load(
                &mut b,
                true,
                Attempt {
                    lsm: false,
                    source_check: false,
                    sock: false,
                    hook,
                },
            );
            let skel = without.unwrap_or_else(|e| panic!("{hook}: {e}"));
            let loaded: Vec<String> = skel
                .object()
                .progs_mut()
                .filter(|p| p.autoload() && p.name().to_string_lossy().starts_with("on_sys_exit"))
                .map(|p| p.name().to_string_lossy().into_owned())
                .collect();
            let want = match hook {
                SyscallHook::ExitTracepoints => "on_sys_exit",
                SyscallHook::RawSysExit => "on_sys_exit_raw",
            };
            assert_eq!(loaded, [want], "{hook}");
        }
    }

    #[test]
    fn start_time_names_this_process_and_not_a_dead_pid() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me > 0);
        let h = types::holder {
            pid: std::process::id(),
            pad: 0,
            start_time: me,
        };
        assert!(holder_alive(&h));
        let reused = types::holder {
            start_time: me + 1,
            ..h
        };
        assert!(!holder_alive(&reused), "same pid, other start time");
        assert!(!holder_alive(&types::holder::default()));
    }
}
