//! Loading the node's set: the load ladder (the most this kernel accepts), attaching and
//! pinning the programs, and opening a set from its pins, attaching a parked one again.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Program};
use tracing::{info, warn};

use super::park::{is_parked, reattach, remove_other_builds_parked};
use super::pin::{
    attached_per_container, pin_fd, remove_pins, CGROUP_PROGS, LEARN_CAP_FEXIT, LEARN_CAP_TP,
    LEARN_PROG, SOCK_PROG,
};
use super::{ms, NodeMaps};
use crate::error::{load_err, PinError};
use crate::kernel::{
    capability_hook, ensure_tracefs, function_params, missing_entry_points, missing_tracepoints,
    probe_lsm, probe_lsm_cached, probe_trampolines, probe_trampolines_cached, syscall_kinds,
    tracepoint_exists, CapabilityHook, SyscallHook, SYSCALL_ENTRY,
};
use crate::raw::read;
use crate::skel::monitor::{types, MonitorSkel, MonitorSkelBuilder};

/// Maps user space reaches through pins (`procs` only to empty it when the set is parked).
const MAPS: &[&str] = &[
    "containers",
    "rings",
    "deny_exec",
    "deny_connect",
    "holders",
    "sock_rules",
    "procs",
    "deny_file",
    "deny_glob",
    "glob_slots",
    "cred_files",
    "learn_syscalls",
];

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
/// `hook` is the syscall program asked for; the fexit programs fall back to the raw sys_exit
/// one where trampolines do not work, the exit-tracepoint one on kernels before 5.15.
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
    /// The programs may use bpf_get_current_task_btf and bpf_task_pt_regs (5.15).
    task_btf: bool,
    /// The learning program on capability checks, when any.
    caps: Option<CapabilityHook>,
}

/// The fexit programs' targets (the sections' `fexit/<function>`): every watched syscall's
/// entry point, and `__secure_computing`.
fn fexit_targets() -> Vec<String> {
    crate::event::WATCHED_SYSCALLS
        .iter()
        .map(|s| format!("{SYSCALL_ENTRY}{s}"))
        .chain(["__secure_computing".to_string()])
        .collect()
}

/// The fexit targets this kernel's BTF lacks (their programs are not loaded).
fn missing_fexit_targets() -> Vec<String> {
    let targets = fexit_targets();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    missing_entry_points(&targets)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The fexit programs to leave out on this kernel: those of the targets its BTF lacks
/// (`missing`), and the `__secure_computing` program that does not match its parameters
/// (`seccomp_params`: one until 7.x, none since).
fn fexit_skipped(missing: &[String], seccomp_params: Option<usize>) -> Vec<String> {
    let mut skip: Vec<String> = crate::event::WATCHED_SYSCALLS
        .iter()
        .filter(|s| missing.contains(&format!("{SYSCALL_ENTRY}{s}")))
        .map(|s| format!("fexit_{s}"))
        .collect();
    match seccomp_params {
        Some(0) => skip.push("fexit_seccomp".into()),
        Some(1) => skip.push("fexit_seccomp_void".into()),
        _ => skip.extend(["fexit_seccomp".into(), "fexit_seccomp_void".into()]),
    }
    skip
}

/// Whether the program `name` of `section` is loaded by `attempt`, given the fexit programs
/// left out on this kernel (`skip`, [`fexit_skipped`]).
fn autoload(section: &str, name: &str, attempt: &Attempt, skip: &[String]) -> bool {
    if name == LEARN_CAP_FEXIT {
        return attempt.caps == Some(CapabilityHook::Fexit);
    }
    if name == LEARN_CAP_TP {
        return attempt.caps == Some(CapabilityHook::Tracepoint);
    }
    if section.starts_with("lsm/") {
        return attempt.lsm && crate::enforce::file::fits_kernel(name);
    }
    if section == "cgroup/sock_create" {
        return attempt.sock;
    }
    if section.starts_with("fexit/") {
        return attempt.hook == SyscallHook::Fexit && !skip.iter().any(|m| m == name);
    }
    match name {
        "on_sys_exit" => attempt.hook == SyscallHook::ExitTracepoints,
        "on_sys_exit_raw" => attempt.hook == SyscallHook::RawSysExit,
        _ => true,
    }
}

fn open_and_load<'a>(
    storage: &'a mut MaybeUninit<libbpf_rs::OpenObject>,
    enforce: bool,
    attempt: Attempt,
    missing: &[String],
) -> Result<MonitorSkel<'a>, PinError> {
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
        rodata.task_btf = u32::from(attempt.task_btf);
        rodata.syscall_hook = attempt.hook.code();
    }
    for mut prog in open.open_object_mut().progs_mut() {
        let section = prog.section().to_string_lossy().into_owned();
        let name = prog.name().to_string_lossy().into_owned();
        prog.set_autoload(autoload(&section, &name, &attempt, missing));
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

/// Loads the set into `dir`: the most this kernel accepts ([`attempts`]), the maps pinned, the
/// programs attached and pinned while `beside` runs on the new `holders` and `rings` maps, and
/// the configuration pinned last. Returns `beside`'s result.
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
    let lsm = dir.parent().map_or_else(probe_lsm, probe_lsm_cached);
    let trampolines = hook == SyscallHook::Fexit
        && dir
            .parent()
            .map_or_else(probe_trampolines, probe_trampolines_cached);
    let missing: Vec<String> = if trampolines {
        let missing = missing_fexit_targets();
        if !missing.is_empty() {
            warn!(
                ?missing,
                "fexit targets missing from the kernel's btf, not watched"
            );
        }
        fexit_skipped(&missing, function_params("__secure_computing"))
    } else {
        Vec::new()
    };
    let caps = capability_hook(|| {
        trampolines
            || dir
                .parent()
                .map_or_else(probe_trampolines, probe_trampolines_cached)
    });
    let probed = started.elapsed();
    let attempts = attempts(lsm, hook, trampolines, caps);
    let mut storages: Vec<MaybeUninit<libbpf_rs::OpenObject>> =
        attempts.iter().map(|_| MaybeUninit::uninit()).collect();
    let (skel, attempt) = load_first(&attempts, &mut storages, enforce, &missing)?;
    let verified = started.elapsed();
    let early = pin_maps(&skel, dir)?;
    let ran = attach_beside(&skel, dir, &early, beside)?;
    pin_config(&skel, dir)?;
    let pinned = started.elapsed();
    drop(skel);
    info!(
        dir = %dir.display(),
        probe_ms = ms(probed),
        load_ms = ms(verified - probed),
        attach_pin_ms = ms(pinned - verified),
        close_ms = ms(started.elapsed() - pinned),
        syscall_hook = %attempt.hook,
        task_btf = attempt.task_btf,
        trampolines,
        bpf_lsm = attempt.lsm,
        from_source = attempt.source_check,
        sock_create = attempt.sock,
        capability_hook = attempt.caps.map_or("none", CapabilityHook::name),
        "monitor programs loaded and pinned"
    );
    Ok(ran)
}

/// The load ladder. Ask for the most, then less: BPF-LSM where the probe (`lsm`) says it works,
/// fromSource in the sock_addr hooks, the sock_create program; a kernel refusing one still gets
/// the rest. For each, the syscall hooks in order: the one asked for, then what a kernel that
/// refuses it takes. Fexit, only where the trampoline probe passed (`trampolines`), first with
/// the helpers of 5.15 (`task_btf`) and then without (5.10), then the raw sys_exit program;
/// the exit-tracepoint program (5.15), then the raw one. With a capability hook (`caps`), the
/// whole ladder is asked with it first, then without it: a kernel refusing the learning
/// program on capability checks loses that program, never a rung of protection.
fn attempts(
    lsm: bool,
    hook: SyscallHook,
    trampolines: bool,
    caps: Option<CapabilityHook>,
) -> Vec<Attempt> {
    let raw = (SyscallHook::RawSysExit, false);
    let hooks: Vec<(SyscallHook, bool)> = match hook {
        SyscallHook::RawSysExit => vec![raw],
        SyscallHook::ExitTracepoints => vec![(SyscallHook::ExitTracepoints, true), raw],
        SyscallHook::Fexit if trampolines => {
            vec![(SyscallHook::Fexit, true), (SyscallHook::Fexit, false), raw]
        }
        SyscallHook::Fexit => vec![raw],
    };
    let mut attempts = Vec::new();
    for caps in [caps, None] {
        for (lsm, source_check, sock) in [
            (lsm, true, true),
            (false, true, true),
            (false, false, true),
            (false, false, false),
        ] {
            for &(hook, task_btf) in &hooks {
                let attempt = Attempt {
                    lsm,
                    source_check,
                    sock,
                    hook,
                    task_btf,
                    caps,
                };
                if !attempts.contains(&attempt) {
                    attempts.push(attempt);
                }
            }
        }
    }
    attempts
}

/// The first of `attempts` this kernel loads (one storage each), or the last refusal.
fn load_first<'a>(
    attempts: &[Attempt],
    storages: &'a mut [MaybeUninit<libbpf_rs::OpenObject>],
    enforce: bool,
    missing: &[String],
) -> Result<(MonitorSkel<'a>, Attempt), PinError> {
    let mut last_err = None;
    for (attempt, storage) in attempts.iter().zip(storages.iter_mut()) {
        match open_and_load(storage, enforce, *attempt, missing) {
            Ok(skel) => return Ok((skel, *attempt)),
            Err(e) => {
                info!(?attempt, error = %e, "load refused, asking for less");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| PinError::Load {
        what: "load".to_string(),
        source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
    }))
}

/// Pins the maps user space reaches ([`MAPS`]) and opens the `holders` and `rings` pins for
/// the set-up beside the attaching.
fn pin_maps(skel: &MonitorSkel<'_>, dir: &Path) -> Result<Maps, PinError> {
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
    Ok(Maps {
        holders: pinned_map("holders")?,
        rings: pinned_map("rings")?,
    })
}

/// Attaches and pins the programs ([`attach_and_pin`]) while `beside` runs on `early` in a
/// thread of its own; returns `beside`'s result.
fn attach_beside<R: Send>(
    skel: &MonitorSkel<'_>,
    dir: &Path,
    early: &Maps,
    beside: impl FnOnce(&Maps) -> R + Send,
) -> Result<R, PinError> {
    let beside = Mutex::new(Some(beside));
    let run = || {
        beside
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|f| f(early))
    };
    let (attached, ran) = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("palisade-ring-setup".into())
            .spawn_scoped(scope, run)
            .ok();
        let attached = attach_and_pin(skel, dir);
        (attached, thread.and_then(|t| t.join().ok()).flatten())
    });
    attached?;
    // A set-up thread that could not start leaves the set-up to this one.
    ran.or_else(run).ok_or_else(|| PinError::Load {
        what: "holder set-up beside the attaching".to_string(),
        source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::Interrupted)),
    })
}

/// Pins the read-only configuration, so that later holders learn what the loader chose. Last:
/// its presence marks a complete set.
fn pin_config(skel: &MonitorSkel<'_>, dir: &Path) -> Result<(), PinError> {
    let rodata = skel
        .object()
        .maps()
        .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
        .ok_or_else(|| PinError::Load {
            what: "map .rodata".to_string(),
            source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
        })?;
    pin_fd(rodata.as_fd(), &dir.join("maps").join("config"))
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

fn open_pins(dir: &Path) -> Result<NodeMaps, PinError> {
    let map = |name: &str| {
        let path = dir.join("maps").join(name);
        MapHandle::from_pinned_path(&path).map_err(|source| PinError::Pin { path, source })
    };
    let prog = |name: &str| {
        let path = dir.join("progs").join(name);
        Program::fd_from_pinned_path(&path).map_err(|source| PinError::Pin { path, source })
    };
    // The optional programs: absent where the kernel could not load them.
    let optional_prog = |name: &str| {
        if dir.join("progs").join(name).exists() {
            prog(name).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut cgroup_progs = Vec::new();
    for (name, attach) in CGROUP_PROGS {
        cgroup_progs.push((*name, *attach, prog(name)?));
    }
    let sock_create = optional_prog(SOCK_PROG.0)?;
    let learn_prog = optional_prog(LEARN_PROG)?;
    let mut learn_cap = None;
    for hook in [CapabilityHook::Fexit, CapabilityHook::Tracepoint] {
        if let Some(fd) = optional_prog(hook.program())? {
            learn_cap = Some((hook, fd));
        }
    }
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
    let syscall_hook =
        SyscallHook::from_code(config.syscall_hook).ok_or_else(|| PinError::Pin {
            path: dir.join("maps/config"),
            source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::InvalidData)),
        })?;
    let missing_syscalls = match syscall_hook {
        SyscallHook::RawSysExit => Vec::new(),
        SyscallHook::ExitTracepoints => missing_tracepoints(),
        // The fexit programs of the syscalls this kernel has an entry point for are pinned.
        SyscallHook::Fexit => crate::event::WATCHED_SYSCALLS
            .iter()
            .filter(|s| !dir.join("progs").join(format!("fexit_{s}")).exists())
            .map(|s| s.to_string())
            .collect(),
    };
    Ok(NodeMaps {
        dir: dir.to_path_buf(),
        lsm: dir.join("links/lsm_exec").exists(),
        syscall_hook,
        missing_syscalls,
        config,
        containers: map("containers")?,
        rings: map("rings")?,
        deny_exec: map("deny_exec")?,
        deny_connect: map("deny_connect")?,
        holders: map("holders")?,
        sock_rules: map("sock_rules")?,
        deny_file: map("deny_file")?,
        deny_glob: map("deny_glob")?,
        glob_slots: map("glob_slots")?,
        cred_files: map("cred_files")?,
        learn_syscalls: map("learn_syscalls")?,
        learn_prog,
        learn_cap,
        sock_create,
        cgroup_progs,
    })
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
