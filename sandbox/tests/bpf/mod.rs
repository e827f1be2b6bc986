//! A small compiler from an OCI seccomp profile to a classic BPF program for the native
//! architecture, and its installation; for tests only (runc compiles the profile itself with
//! libseccomp). It follows libseccomp's reading of the profile: names unknown on this
//! architecture are skipped, rules for one syscall are alternatives tried in order, the
//! conditions of a rule must all hold, and arguments are compared on all 64 bits.

use std::collections::BTreeMap;
use std::str::FromStr;

use palisade_sandbox::seccomp::{Action, ArgFilter, Op, Profile};

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 1;

/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;
/// x32 syscalls run under the x86_64 audit arch with this bit set in the number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<u32> {
    syscalls::x86_64::Sysno::from_str(name)
        .ok()
        .map(|s| s.id() as u32)
}
#[cfg(target_arch = "aarch64")]
fn syscall_number(name: &str) -> Option<u32> {
    syscalls::aarch64::Sysno::from_str(name)
        .ok()
        .map(|s| s.id() as u32)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Result<libc::sock_filter, String> {
    let short = |n: usize| u8::try_from(n).map_err(|_| format!("jump of {n} is too long"));
    Ok(libc::sock_filter {
        code,
        jt: short(jt)?,
        jf: short(jf)?,
        k,
    })
}

fn ret_value(action: Action, errno: Option<u32>) -> u32 {
    match action {
        Action::Allow => SECCOMP_RET_ALLOW,
        Action::Errno => SECCOMP_RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
    }
}

/// The instructions that fall through when `filter` holds and otherwise jump `fail` past
/// their own end (the caller adds the distance to the end of the rule).
fn condition(filter: &ArgFilter, distance_after: usize) -> Result<Vec<libc::sock_filter>, String> {
    if filter.index > 5 {
        return Err(format!("argument index {} out of range", filter.index));
    }
    let lo = ARGS_OFFSET + 8 * filter.index;
    let hi = lo + 4;
    let (mask, want) = match filter.op {
        Op::Eq => (u64::MAX, filter.value),
        Op::MaskedEq => (filter.value, filter.value_two),
    };
    let halves = [
        (lo, mask as u32, want as u32),
        (hi, (mask >> 32) as u32, (want >> 32) as u32),
    ];
    let per_half = |m: u32| if m == u32::MAX { 2 } else { 3 };
    let total: usize = halves.iter().map(|(_, m, _)| per_half(*m)).sum();
    let mut out = Vec::with_capacity(total);
    for (offset, half_mask, half_want) in halves {
        out.push(stmt(BPF_LD_W_ABS, offset));
        if half_mask != u32::MAX {
            out.push(stmt(BPF_AND_K, half_mask));
        }
        let remaining = total - out.len() - 1;
        out.push(jump(BPF_JEQ_K, half_want, 0, remaining + distance_after)?);
    }
    Ok(out)
}

/// Compiles `profile` for the native architecture. Architectures other than the native one
/// are killed, which is stricter than runc (which filters them too) and enough here: the
/// test only issues native syscalls.
pub fn compile(profile: &Profile) -> Result<Vec<libc::sock_filter>, String> {
    let default = ret_value(profile.default_action, profile.default_errno_ret);
    let mut by_number: BTreeMap<u32, Vec<(u32, &[ArgFilter])>> = BTreeMap::new();
    for rule in &profile.syscalls {
        let action = ret_value(rule.action, rule.errno_ret);
        for name in &rule.names {
            if let Some(nr) = syscall_number(name) {
                by_number
                    .entry(nr)
                    .or_default()
                    .push((action, rule.args.as_slice()));
            }
        }
    }

    let mut prog = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jump(BPF_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0)?,
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        prog.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1)?);
        prog.push(stmt(BPF_RET_K, default));
    }

    for (nr, rules) in by_number {
        let mut body = Vec::new();
        for (action, args) in rules {
            let mut rule = Vec::new();
            let mut conds: Vec<Vec<libc::sock_filter>> = Vec::new();
            // Each condition's failure jumps over the conditions after it and the return.
            let mut after = 1;
            for filter in args.iter().rev() {
                let block = condition(filter, after)?;
                after += block.len();
                conds.push(block);
            }
            for block in conds.into_iter().rev() {
                rule.extend(block);
            }
            rule.push(stmt(BPF_RET_K, action));
            body.extend(rule);
        }
        body.push(stmt(BPF_RET_K, default));
        prog.push(jump(BPF_JEQ_K, nr, 0, body.len())?);
        prog.extend(body);
    }
    prog.push(stmt(BPF_RET_K, default));
    Ok(prog)
}

/// Sets no_new_privs and installs `prog` on the calling thread. Only async-signal-safe
/// calls, so it may run between fork and exec.
pub fn install(prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
