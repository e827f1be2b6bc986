//! Attacks a compromised container would try, each run in a busybox container (with the
//! `palisade-probe` for the system calls busybox has no applet for).

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::{ContainerConfig, Int64Value};

use super::{security, Observed, Scope, SecCheck};
use crate::cri::{self, SLEEPER};
use crate::sec_check;
use crate::suite::Ctx;

/// The probe inside the test image, and its setuid-root copy.
pub const PROBE: &str = "/usr/bin/palisade-probe";
pub const PROBE_SUID: &str = "/usr/bin/palisade-probe-suid";

pub fn all() -> Vec<SecCheck> {
    let attack = Scope::Attack;
    // `ptrace 1` is an exec'd process attaching to the container's init: outside what it
    // may trace.
    vec![
        sec_check!("attack_mount_tmpfs", 60, attack, shell: "mount -t tmpfs x /tmp"),
        sec_check!("attack_mount_syscall", 60, attack, probe: ["mount"]),
        sec_check!("attack_unshare_userns", 60, attack, shell: "unshare -U true"),
        sec_check!("attack_unshare_syscall", 60, attack, probe: ["unshare"]),
        sec_check!("attack_compat_syscall", 60, attack, compat_syscall),
        sec_check!("attack_read_proc_kcore", 60, attack, read_kcore),
        sec_check!("attack_read_proc_keys", 60, attack, read_keys),
        // Writes the current value back, so that a runtime that let it through changes nothing.
        sec_check!("attack_write_proc_sys", 60, attack,
            shell: "v=$(cat /proc/sys/kernel/panic) && echo \"$v\" > /proc/sys/kernel/panic"),
        sec_check!("attack_raw_socket", 60, attack, probe: ["rawsock"]),
        sec_check!("attack_ping", 60, attack, shell: "ping -c 1 -W 2 127.0.0.1 >/dev/null"),
        sec_check!("attack_keyctl", 60, attack, probe: ["keyctl"]),
        sec_check!("attack_bpf", 60, attack, probe: ["bpf"]),
        sec_check!("attack_perf_event_open", 60, attack, probe: ["perf_event_open"]),
        sec_check!("attack_init_module", 60, attack, probe: ["init_module"]),
        sec_check!("attack_ptrace_pid1", 60, attack, probe: ["ptrace", "1"]),
        sec_check!("attack_setuid_binary", 60, attack, setuid_binary),
        sec_check!("attack_host_path_readonly", 60, attack, host_path_readonly),
    ]
}

/// A pod with one long-running container shaped by `tweak`; returns the container id.
pub async fn sleeper(ctx: &Ctx, tweak: impl FnOnce(&mut ContainerConfig)) -> Result<String> {
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("target", SLEEPER);
    tweak(&mut cc);
    ctx.cri.run_container(&pod, &cc, &cfg).await
}

/// Runs the probe in `c` and reads its verdict (`allowed`, or `denied errno=N NAME`).
pub async fn probe(ctx: &Ctx, c: &str, bin: &str, args: &[&str]) -> Result<Observed> {
    let mut cmd = vec![bin];
    cmd.extend_from_slice(args);
    let (out, err, code) = ctx.cri.exec_sync(c, &cmd, 20).await?;
    let line = out.lines().last().unwrap_or("").trim().to_string();
    match code {
        0 => Ok(Observed::allowed(format!("({line})"))),
        1 => {
            let name = line.rsplit(' ').next().unwrap_or("");
            let prefix = line.split("denied").next().unwrap_or("").trim();
            Ok(Observed::blocked(if prefix.is_empty() {
                format!("({name})")
            } else {
                format!("({prefix}, {name})")
            }))
        }
        _ => bail!("probe {cmd:?} exited {code}: stdout {out:?} stderr {err:?}"),
    }
}

/// Runs a shell snippet: exit 0 is allowed, anything else blocked with the last stderr line.
pub async fn shell(ctx: &Ctx, c: &str, script: &str) -> Result<Observed> {
    let (out, err, code) = ctx.cri.exec_sync(c, &["sh", "-c", script], 20).await?;
    if code == 0 {
        return Ok(Observed::allowed(format!("(exit 0{})", brief(&out))));
    }
    Ok(Observed::blocked(format!("(exit {code}{})", brief(&err))))
}

/// `: <last line>` of some output, or nothing.
fn brief(s: &str) -> String {
    match s.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(l) => format!(": {l}"),
        None => String::new(),
    }
}

/// The probe with `args` in a fresh default sleeper.
pub async fn probe_op(ctx: &Ctx, args: &[&str]) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    probe(ctx, &c, PROBE, args).await
}

/// A shell snippet in a fresh default sleeper.
pub async fn shell_op(ctx: &Ctx, script: &str) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    shell(ctx, &c, script).await
}

/// A system call through the 32-bit entry (x86's `int 0x80`), which reaches kernel code that
/// 64-bit containers never need: under palisade's profile the process is killed (SIGSYS).
async fn compat_syscall(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    let (out, err, code) = ctx.cri.exec_sync(&c, &[PROBE, "compat32"], 20).await?;
    match code {
        0 => Ok(Observed::allowed("(ia32 getpid answered)")),
        // 128 + SIGSYS: the seccomp filter's bad-architecture action.
        159 => Ok(Observed::blocked("(killed by SIGSYS)")),
        1 => Ok(Observed::blocked(format!("({})", out.trim()))),
        _ => bail!("probe compat32 exited {code}: stdout {out:?} stderr {err:?}"),
    }
}

/// Reads the start of a kernel file: nothing (a mask) or an error is blocked.
async fn read_kernel_file(ctx: &Ctx, path: &str) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    let (out, err, code) = ctx
        .cri
        .exec_sync(&c, &["head", "-c", "64", path], 20)
        .await?;
    if code != 0 {
        // A kernel built without the file (no CONFIG_PROC_KCORE) has nothing to read anywhere.
        let absent = if std::path::Path::new(path).exists() {
            ""
        } else {
            ", absent on this host too"
        };
        return Ok(Observed::blocked(format!(
            "(exit {code}{}{absent})",
            brief(&err)
        )));
    }
    if out.is_empty() {
        return Ok(Observed::blocked("(reads empty: masked)"));
    }
    Ok(Observed::allowed(format!("(read {} bytes)", out.len())))
}

async fn read_kcore(ctx: &Ctx) -> Result<Observed> {
    read_kernel_file(ctx, "/proc/kcore").await
}

async fn read_keys(ctx: &Ctx) -> Result<Observed> {
    read_kernel_file(ctx, "/proc/keys").await
}

/// A setuid-root binary run by uid 1000: with no_new_privs it stays uid 1000.
async fn setuid_binary(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |cc| {
        security(cc).run_as_user = Some(Int64Value { value: 1000 });
    })
    .await?;
    let id = ctx.cri.sh(&c, "id -u").await?;
    if id.trim() != "1000" {
        bail!("container runs as uid {:?}, want 1000", id.trim());
    }
    probe(ctx, &c, PROBE_SUID, &["setuid"]).await
}

/// A host directory mounted read-only: a write through it must not reach the host.
async fn host_path_readonly(ctx: &Ctx) -> Result<Observed> {
    let src = ctx.dir.join("host-ro");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let file = src.join("config");
    std::fs::write(&file, "original\n").with_context(|| format!("write {}", file.display()))?;
    let c = sleeper(ctx, |cc| {
        cc.mounts = vec![cri::bind_mount("/host", &src, true)];
    })
    .await?;
    let seen = ctx.cri.sh(&c, "cat /host/config").await?;
    if seen != "original\n" {
        bail!("read through the mount: {seen:?}");
    }
    let o = shell(ctx, &c, "echo pwned > /host/config").await?;
    let now = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    if now != "original\n" {
        return Ok(Observed::allowed(format!("(host file now {now:?})")));
    }
    if !o.blocked {
        bail!("the write succeeded in the container but the host file is unchanged");
    }
    Ok(o)
}
