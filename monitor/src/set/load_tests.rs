//! The load ladder and the autoload choices of `load.rs`, and the ladder on the running kernel.

use super::*;

/// Whether the running kernel's release is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    crate::kernel::release_at_least(major, minor)
}

/// An attempt with `hook` alone: no LSM, no source check, no socket or capability program.
fn bare(hook: SyscallHook) -> Attempt {
    Attempt {
        lsm: false,
        source_check: false,
        sock: false,
        hook,
        task_btf: false,
        caps: None,
    }
}

/// [`bare`] with the source check and the socket program.
fn checked(hook: SyscallHook) -> Attempt {
    Attempt {
        source_check: true,
        sock: true,
        ..bare(hook)
    }
}

fn hooks_of(attempts: &[Attempt]) -> Vec<(SyscallHook, bool)> {
    let mut hooks = Vec::new();
    for a in attempts {
        if !hooks.contains(&(a.hook, a.task_btf)) {
            hooks.push((a.hook, a.task_btf));
        }
    }
    hooks
}

/// The ladder asks for fexit only where the trampoline probe passed, with the 5.15
/// helpers first, and always ends at the raw sys_exit program; BPF-LSM is asked first
/// only where its probe passed, and every hook is tried at each rung.
#[test]
fn the_ladder_tries_fexit_only_where_trampolines_work_and_ends_raw() {
    let raw = (SyscallHook::RawSysExit, false);
    let fx = attempts(true, SyscallHook::Fexit, true, None);
    assert_eq!(
        hooks_of(&fx),
        [(SyscallHook::Fexit, true), (SyscallHook::Fexit, false), raw]
    );
    assert!(fx[0].lsm && fx[0].source_check && fx[0].sock);
    assert_eq!(fx[0].hook, SyscallHook::Fexit);
    assert!(!fx.last().unwrap().lsm && fx.last().unwrap().hook == SyscallHook::RawSysExit);
    // every rung tries the three hooks, no attempt twice
    assert_eq!(fx.len(), 4 * 3);
    assert!(fx.iter().enumerate().all(|(i, a)| !fx[..i].contains(a)));

    let refused = attempts(true, SyscallHook::Fexit, false, None);
    assert_eq!(hooks_of(&refused), [raw]);
    assert!(refused.iter().all(|a| a.hook == SyscallHook::RawSysExit));

    let tp = attempts(false, SyscallHook::ExitTracepoints, true, None);
    assert_eq!(hooks_of(&tp), [(SyscallHook::ExitTracepoints, true), raw]);
    assert!(tp.iter().all(|a| !a.lsm));
    assert_eq!(
        hooks_of(&attempts(false, SyscallHook::RawSysExit, true, None)),
        [raw]
    );
}

/// With a capability hook the whole ladder is asked with its program first, then the same
/// ladder without it: a kernel that refuses the program loses it, not a rung of protection.
#[test]
fn the_ladder_drops_the_capability_program_before_any_rung() {
    let without = attempts(true, SyscallHook::Fexit, true, None);
    let with = attempts(true, SyscallHook::Fexit, true, Some(CapabilityHook::Fexit));
    assert_eq!(with.len(), 2 * without.len());
    let (first, second) = with.split_at(without.len());
    assert!(first.iter().all(|a| a.caps == Some(CapabilityHook::Fexit)));
    assert_eq!(second, &without[..]);
    let strip = |a: &Attempt| Attempt { caps: None, ..*a };
    assert_eq!(first.iter().map(strip).collect::<Vec<_>>(), without);

    let at = |caps| Attempt {
        caps,
        ..checked(SyscallHook::RawSysExit)
    };
    let fexit = "fexit/cap_capable";
    let tp = "tp_btf/cap_capable";
    let none = at(None);
    assert!(!autoload(fexit, LEARN_CAP_FEXIT, &none, &[]));
    assert!(!autoload(tp, LEARN_CAP_TP, &none, &[]));
    let fx = at(Some(CapabilityHook::Fexit));
    assert!(autoload(fexit, LEARN_CAP_FEXIT, &fx, &[]));
    assert!(!autoload(tp, LEARN_CAP_TP, &fx, &[]));
    let tpa = at(Some(CapabilityHook::Tracepoint));
    assert!(!autoload(fexit, LEARN_CAP_FEXIT, &tpa, &[]));
    assert!(autoload(tp, LEARN_CAP_TP, &tpa, &[]));
    assert!(autoload("tp_btf/sys_enter", LEARN_PROG, &none, &[]));
}

/// The capability hook this kernel offers loads: fexit on `cap_capable` where trampolines
/// work, the `capability:cap_capable` tracepoint where the kernel has it otherwise.
#[test]
fn the_capability_program_this_kernel_offers_loads() {
    let trampolines = probe_trampolines();
    let caps = capability_hook(|| trampolines);
    let tracepoint = tracepoint_exists("capability/cap_capable");
    match caps {
        Some(CapabilityHook::Fexit) => assert!(trampolines),
        Some(CapabilityHook::Tracepoint) => assert!(tracepoint),
        None => {
            assert!(!tracepoint, "the tracepoint exists, no hook chosen");
            return;
        }
    }
    let mut storage = MaybeUninit::uninit();
    let attempt = Attempt {
        caps,
        ..bare(SyscallHook::RawSysExit)
    };
    let skel =
        open_and_load(&mut storage, true, attempt, &[]).unwrap_or_else(|e| panic!("{caps:?}: {e}"));
    let loaded: Vec<String> = skel
        .object()
        .progs_mut()
        .filter(|p| p.autoload() && p.name().to_string_lossy().starts_with("learn_cap"))
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        loaded,
        [caps.map(CapabilityHook::program).unwrap_or_default()]
    );
}

/// Which programs an attempt loads: the fexit ones with the fexit hook only, minus the
/// targets the kernel lacks; exactly one of the tracepoint variants otherwise.
#[test]
fn autoload_follows_the_hook_and_the_missing_targets() {
    let at = checked;
    let missing = fexit_skipped(&[format!("{SYSCALL_ENTRY}init_module")], Some(1));
    assert_eq!(
        missing,
        ["fexit_init_module", "fexit_seccomp_void"],
        "one argument: the void program is left out"
    );
    assert_eq!(fexit_skipped(&[], Some(0)), ["fexit_seccomp"]);
    assert_eq!(
        fexit_skipped(&[], None),
        ["fexit_seccomp", "fexit_seccomp_void"]
    );
    let fx = at(SyscallHook::Fexit);
    let openat = format!("fexit/{SYSCALL_ENTRY}openat");
    let init = format!("fexit/{SYSCALL_ENTRY}init_module");
    assert!(autoload(&openat, "fexit_openat", &fx, &missing));
    assert!(!autoload(&init, "fexit_init_module", &fx, &missing));
    assert!(autoload(
        "fexit/__secure_computing",
        "fexit_seccomp",
        &fx,
        &missing
    ));
    assert!(!autoload(
        "tp_btf/sys_exit",
        "on_sys_exit_raw",
        &fx,
        &missing
    ));
    assert!(!autoload("tracepoint", "on_sys_exit", &fx, &missing));
    assert!(autoload(
        "tp_btf/sched_process_exec",
        "on_exec",
        &fx,
        &missing
    ));
    assert!(!autoload(
        "lsm/bprm_check_security",
        "lsm_exec",
        &fx,
        &missing
    ));
    let raw = at(SyscallHook::RawSysExit);
    assert!(!autoload(&openat, "fexit_openat", &raw, &[]));
    assert!(autoload("tp_btf/sys_exit", "on_sys_exit_raw", &raw, &[]));
    assert!(!autoload("tracepoint", "on_sys_exit", &raw, &[]));
    let tp = at(SyscallHook::ExitTracepoints);
    assert!(autoload("tracepoint", "on_sys_exit", &tp, &[]));
    assert!(!autoload(
        "fexit/__secure_computing",
        "fexit_seccomp",
        &tp,
        &[]
    ));
}

/// The load ladder on the running kernel: where the probe finds BPF-LSM in force, the LSM
/// program loads (with the syscall program this kernel takes); without it the object
/// always loads with the raw sys_exit variant, with the exit-tracepoint one exactly from
/// 5.15 on (it needs bpf_get_current_task_btf and bpf_task_pt_regs, which 5.10 lacks), and
/// with the fexit programs (without the 5.15 helpers) wherever the trampoline probe passes.
#[test]
fn lsm_attempt_follows_the_probe_and_the_fallbacks_load() {
    let lsm = probe_lsm();
    let trampolines = probe_trampolines();
    let exit_tracepoints = kernel_at_least(5, 15);
    let missing = missing_fexit_targets();
    let seccomp_params = function_params("__secure_computing");
    let skip = fexit_skipped(&missing, seccomp_params);
    let mut a = MaybeUninit::uninit();
    let attempt = Attempt {
        lsm: true,
        ..bare(SyscallHook::RawSysExit)
    };
    let with_lsm = open_and_load(&mut a, true, attempt, &skip);
    assert!(
        !lsm || with_lsm.is_ok(),
        "the probe found bpf-lsm in force, the lsm program did not load: {:?}",
        with_lsm.err()
    );
    for hook in [
        SyscallHook::Fexit,
        SyscallHook::ExitTracepoints,
        SyscallHook::RawSysExit,
    ] {
        let mut b = MaybeUninit::uninit();
        let attempt = Attempt {
            task_btf: hook == SyscallHook::ExitTracepoints,
            ..bare(hook)
        };
        let without = open_and_load(&mut b, true, attempt, &skip);
        if hook == SyscallHook::ExitTracepoints && !exit_tracepoints {
            assert!(without.is_err(), "{hook} loaded before 5.15");
            continue;
        }
        if hook == SyscallHook::Fexit && !trampolines {
            // Where trampolines are refused the loader never asks for these.
            continue;
        }
        let skel = without.unwrap_or_else(|e| panic!("{hook}: {e}"));
        let mut loaded: Vec<String> = skel
            .object()
            .progs_mut()
            .filter(|p| {
                let n = p.name().to_string_lossy();
                p.autoload() && (n.starts_with("on_sys_exit") || n.starts_with("fexit_"))
            })
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        loaded.sort();
        let want: Vec<String> = match hook {
            SyscallHook::ExitTracepoints => vec!["on_sys_exit".into()],
            SyscallHook::RawSysExit => vec!["on_sys_exit_raw".into()],
            SyscallHook::Fexit => {
                let mut w: Vec<String> = crate::event::WATCHED_SYSCALLS
                    .iter()
                    .filter(|s| !missing.contains(&format!("{SYSCALL_ENTRY}{s}")))
                    .map(|s| format!("fexit_{s}"))
                    .collect();
                match seccomp_params {
                    Some(0) => w.push("fexit_seccomp_void".into()),
                    Some(1) => w.push("fexit_seccomp".into()),
                    _ => {}
                }
                w.sort();
                w
            }
        };
        assert_eq!(loaded, want, "{hook}");
    }
}
