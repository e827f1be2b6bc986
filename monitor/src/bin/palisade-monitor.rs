//! Node tool for the monitor: hold a handle (for tests and debugging), clean stale pins, and
//! measure the monitor's cost.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use palisade_monitor::{
    cgroup_id_of_dir, unified_mount, ContainerRef, ContainerRules, HookFloor, MonitorConfig,
    NodeMonitor, SyscallHook,
};

const USAGE: &str =
    "usage: palisade-monitor hold <pin-root> [fexit|raw|tp] | cleanup <pin-root> | \
bench [iterations [rounds]] | bench-hooks [iterations [rounds [modes]]] | \
bench-flood [operations...] | bench-worker <exec|open|connect|getppid> <iterations> [seccomp] | \
detect-probe";

fn config(root: &str) -> MonitorConfig {
    MonitorConfig {
        pin_root: PathBuf::from(root),
        ..Default::default()
    }
}

fn main() -> Result<()> {
    palisade_monitor::route_libbpf_logs_to_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["hold", root] | ["hold", root, "fexit"] => hold(config(root)),
        ["hold", root, "raw"] => hold(MonitorConfig {
            syscall_hook: SyscallHook::RawSysExit,
            ..config(root)
        }),
        ["hold", root, "tp"] => hold(MonitorConfig {
            syscall_hook: SyscallHook::ExitTracepoints,
            ..config(root)
        }),
        ["cleanup", root] => {
            let removed = palisade_monitor::cleanup_stale(&config(root))?;
            println!("{}", if removed { "removed" } else { "in use" });
            Ok(())
        }
        ["bench"] => bench(2000, 5),
        ["bench", n] => bench(n.parse().context("iterations")?, 5),
        ["bench", n, rounds] => bench(
            n.parse().context("iterations")?,
            rounds.parse().context("rounds")?,
        ),
        ["bench-flood"] => flood(&[10_000, 100_000, 1_000_000]),
        ["bench-flood", ops @ ..] => flood(
            &ops.iter()
                .map(|n| n.parse().context("operations"))
                .collect::<Result<Vec<u32>>>()?,
        ),
        ["bench-hooks"] => bench_hooks(2000, 3, None),
        ["bench-hooks", n] => bench_hooks(n.parse().context("iterations")?, 3, None),
        ["bench-hooks", n, rounds] => bench_hooks(
            n.parse().context("iterations")?,
            rounds.parse().context("rounds")?,
            None,
        ),
        ["bench-hooks", n, rounds, modes] => bench_hooks(
            n.parse().context("iterations")?,
            rounds.parse().context("rounds")?,
            Some(mode_list(modes)?),
        ),
        ["bench-worker", kind, n] => worker(kind, n.parse().context("iterations")?, false),
        ["bench-worker", kind, n, "seccomp"] => {
            worker(kind, n.parse().context("iterations")?, true)
        }
        ["detect-probe"] => detect_probe(),
        _ => bail!("{USAGE}"),
    }
}

/// Makes the calls three built-in detections look for (unshare, a raw socket, setuid to 0) and
/// exits: run inside a watched container, after its entrypoint, it checks that the node's
/// detections fire on real syscalls of the container's own processes.
fn detect_probe() -> Result<()> {
    // SAFETY: plain syscalls on this process; the socket is closed right away.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUTS) != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare");
        }
        let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error()).context("raw socket");
        }
        libc::close(s);
        if libc::setuid(0) != 0 {
            return Err(std::io::Error::last_os_error()).context("setuid 0");
        }
    }
    Ok(())
}

/// Opens a handle, says so on stdout, and keeps it until killed.
fn hold(config: MonitorConfig) -> Result<()> {
    let (tx, _rx) = sync_channel(16);
    let monitor = NodeMonitor::open(config, tx)?;
    let f = monitor.features();
    eprintln!("syscall hook: {}", f.syscall_hook);
    if !f.missing_syscalls.is_empty() {
        eprintln!("syscalls not watched: {}", f.missing_syscalls.join(" "));
    }
    eprintln!("bpf-lsm: {}", f.bpf_lsm);
    eprintln!("from-source: {}", f.from_source);
    eprintln!("sock-create: {}", f.sock_create);
    eprintln!(
        "capability-hook: {}",
        f.capability_hook.map_or("none", |h| h.name())
    );
    println!("ready {}", monitor.pin_dir().display());
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// CPU time this process and its reaped children have used, in nanoseconds.
fn cpu_ns() -> u128 {
    let ns = |who| {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
        // SAFETY: zero-initialised and filled by getrusage.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| t.tv_sec as u128 * 1_000_000_000 + t.tv_usec as u128 * 1000;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    ns(libc::RUSAGE_SELF) + ns(libc::RUSAGE_CHILDREN)
}

/// Runs one loop in this process and prints wall and CPU nanoseconds per operation. CPU time
/// (user and system, the BPF programs included) leaves out the time the loop waited for a
/// CPU, which on a shared machine is most of the noise. With `seccomp`, the loop (and what it
/// executes) runs under a seccomp filter first, as a container's processes do.
fn worker(kind: &str, n: u32, seccomp: bool) -> Result<()> {
    if seccomp {
        install_seccomp_filter()?;
    }
    let start;
    let cpu;
    match kind {
        "exec" => {
            start = Instant::now();
            cpu = cpu_ns();
            for _ in 0..n {
                Command::new("/bin/true").status()?;
            }
        }
        "open" => {
            start = Instant::now();
            cpu = cpu_ns();
            for _ in 0..n {
                drop(std::fs::File::open("/etc/hostname")?);
            }
        }
        "connect" => {
            // UDP: socket + connect + close measure the hooks without a TCP handshake and an
            // accepting thread, whose scheduling would drown them.
            let target = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
            start = Instant::now();
            cpu = cpu_ns();
            for _ in 0..n {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.connect(target)?;
            }
        }
        "getppid" => {
            // A syscall the monitor does not watch: what every process on the node pays.
            start = Instant::now();
            cpu = cpu_ns();
            for _ in 0..n {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
            }
        }
        other => bail!("unknown loop {other}"),
    }
    let cpu = cpu_ns() - cpu;
    let n = u128::from(n.max(1));
    println!("{} {}", start.elapsed().as_nanos() / n, cpu / n);
    Ok(())
}

/// A seccomp filter that refuses one syscall (`acct`, EPERM) and allows every other: enough to
/// put every syscall of the process through `__secure_computing`, as a container's filter does.
fn install_seccomp_filter() -> Result<()> {
    const RET_ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // A = seccomp_data.nr
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_acct as u32,
        },
        stmt(libc::BPF_RET | libc::BPF_K, RET_ERRNO_EPERM),
        stmt(libc::BPF_RET | libc::BPF_K, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a filter program that outlives the call; no_new_privs first, as an
    // unprivileged filter needs.
    let rc = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("install the bench's seccomp filter");
    }
    Ok(())
}

struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Result<Self> {
        let path = unified_mount()?.join(format!("palisade-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("cgroup {}", path.display()))?;
        Ok(Cgroup(path))
    }

    /// The bench's stand-in for a container living in this cgroup.
    fn container(&self) -> Result<ContainerRef> {
        Ok(ContainerRef {
            cgroup_id: cgroup_id_of_dir(&self.0)?,
            namespace: "bench".into(),
            pod: self.0.display().to_string(),
            container: "c".into(),
            ..Default::default()
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Wall and CPU nanoseconds per operation of one loop run in `cgroup`.
fn run_worker(cgroup: &Cgroup, kind: &str, n: u32) -> Result<(u64, u64)> {
    run_worker_with(cgroup, kind, n, false)
}

/// [`run_worker`], the loop under a seccomp filter when `seccomp` is set.
fn run_worker_with(cgroup: &Cgroup, kind: &str, n: u32, seccomp: bool) -> Result<(u64, u64)> {
    let procs = std::ffi::CString::new(
        cgroup
            .0
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench-worker", kind, &n.to_string()])
        .args(seccomp.then_some("seccomp"))
        .stdout(Stdio::piped());
    // SAFETY: the hook only calls async-signal-safe open/write/close.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("bench worker {kind} failed: {}", out.status);
    }
    let text = String::from_utf8(out.stdout)?;
    let mut cells = text.split_whitespace().map(str::parse::<u64>);
    match (cells.next(), cells.next()) {
        (Some(wall), Some(cpu)) => Ok((wall?, cpu?)),
        _ => bail!("bench worker {kind} printed {text:?}"),
    }
}

/// A node monitor whose events a thread counts and throws away.
struct Drained {
    monitor: NodeMonitor,
    drain: std::thread::JoinHandle<usize>,
}

impl Drained {
    fn open(config: MonitorConfig) -> Result<Self> {
        let (tx, rx) = sync_channel(1 << 16);
        let drain = std::thread::spawn(move || rx.iter().count());
        let monitor = NodeMonitor::open(config, tx)?;
        Ok(Self { monitor, drain })
    }

    /// Closes the monitor; how many events it delivered.
    fn close(self) -> Result<usize> {
        drop(self.monitor);
        self.drain
            .join()
            .map_err(|_| anyhow::anyhow!("drain thread panicked"))
    }
}

/// A mode's row: each loop's median wall and CPU time, `wall / cpu`.
fn median_cells(loops: &mut [(Vec<u64>, Vec<u64>)]) -> Vec<String> {
    loops
        .iter_mut()
        .map(|(wall, cpu)| format!("{} / {}", median(wall), median(cpu)))
        .collect()
}

/// `bench-hooks`' mode numbers: "1,3,8".
fn mode_list(s: &str) -> Result<Vec<usize>> {
    let modes = s
        .split(',')
        .map(|m| m.parse().with_context(|| format!("bench-hooks mode {m:?}")))
        .collect::<Result<Vec<usize>>>()?;
    if let Some(m) = modes.iter().find(|m| !(1..=8).contains(*m)) {
        bail!("bench-hooks mode {m}: the modes are numbered 1 to 8");
    }
    Ok(modes)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The loops, in each mode, `rounds` times interleaved (so that a burst of load elsewhere on
/// the machine hits every mode alike); prints the median per mode and loop.
fn bench(n: u32, rounds: u32) -> Result<()> {
    let root = format!("/sys/fs/bpf/palisade-bench-{}", std::process::id());
    let measured = Cgroup::new("measured")?;
    let others: Vec<Cgroup> = (0..20)
        .map(|i| Cgroup::new(&format!("idle{i}")))
        .collect::<Result<_>>()?;
    // Each loop's iterations, scaled so that each takes a comparable time.
    let loops = [
        ("exec", (n / 4).max(1)),
        ("open", n * 10),
        ("connect", n),
        ("getppid", n * 50),
    ];
    // (mode, watch the measured cgroup, other cgroups watched, raw sys_exit variant); the two
    // "empty" modes are the floor: empty programs on the same hooks, no monitor.
    let modes: [(&str, bool, usize, bool); 8] = [
        ("no monitor", false, 0, false),
        ("empty programs", false, 0, false),
        ("empty raw exit", false, 0, true),
        ("exit tps, not watched", false, 20, false),
        ("exit tps, 1 watched", true, 0, false),
        ("exit tps, 20 watched", true, 19, false),
        ("raw exit, not watched", false, 20, true),
        ("raw exit, 1 watched", true, 0, true),
    ];
    // [mode][loop] -> samples of (wall, cpu)
    let mut samples = vec![vec![(Vec::new(), Vec::new()); loops.len()]; modes.len()];
    let (mut delivered, mut dropped) = (0usize, 0u64);
    for _ in 0..rounds {
        for (m, &(_, watch_measured, idle, raw)) in modes.iter().enumerate() {
            let hook = if raw {
                SyscallHook::RawSysExit
            } else {
                SyscallHook::ExitTracepoints
            };
            let run_loops = |samples: &mut Vec<(Vec<u64>, Vec<u64>)>| -> Result<()> {
                for (l, (kind, iterations)) in loops.iter().enumerate() {
                    let (wall, cpu) = run_worker(&measured, kind, *iterations)?;
                    samples[l].0.push(wall);
                    samples[l].1.push(cpu);
                }
                Ok(())
            };
            if m == 0 {
                run_loops(&mut samples[m])?;
                continue;
            }
            if m <= 2 {
                let floor = HookFloor::attach(hook)?;
                run_loops(&mut samples[m])?;
                drop(floor);
                continue;
            }
            let drained = Drained::open(MonitorConfig {
                syscall_hook: hook,
                keep_loaded: false,
                ..config(&root)
            })?;
            let monitor = &drained.monitor;
            let mut watches = Vec::new();
            let cgroups = watch_measured
                .then_some(&measured)
                .into_iter()
                .chain(others.iter().take(idle));
            for cg in cgroups {
                watches.push(monitor.watch(cg.container()?, ContainerRules::default())?);
            }
            run_loops(&mut samples[m])?;
            dropped += watches.iter().map(|w| w.stats().drops).sum::<u64>();
            drop(watches);
            delivered += drained.close()?;
        }
    }
    let counts: Vec<String> = loops.iter().map(|(k, i)| format!("{k} {i}")).collect();
    println!(
        "iterations: {}; {rounds} rounds interleaved, medians; ns per operation, wall / CPU \
         (lower is better)",
        counts.join(", ")
    );
    println!(
        "{:<22} {:>19} {:>13} {:>15} {:>11}",
        "mode", "exec", "open", "connect", "getppid"
    );
    for (m, (mode, _, _, _)) in modes.iter().enumerate() {
        let cells = median_cells(&mut samples[m]);
        println!(
            "{mode:<22} {:>19} {:>13} {:>15} {:>11}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    println!("({delivered} events delivered, {dropped} dropped in the kernel)");
    // The pin root holds the cached BPF-LSM probe answer besides the (removed) pins.
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// One configuration of `bench-hooks`: whether the monitor is loaded and the measured cgroup
/// watched, and which of the set's pinned links are removed (which detaches those programs)
/// before the loops run.
struct HookMode {
    name: &'static str,
    monitor: bool,
    watched: bool,
    detach: fn(&str) -> bool,
    /// Count each program's runs and run time (`kernel.bpf_stats_enabled`), which costs every
    /// run two clock reads: this mode's loop figures are not comparable with the others'.
    stats: bool,
}

/// The kernel's count of runs and run time of every loaded program whose name starts like
/// the monitor's (names are cut to 15 bytes), for `bench-hooks`' stats mode.
fn program_stats() -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| p.run_cnt > 0)
        .map(|p| {
            (
                p.name.to_string_lossy().into_owned(),
                p.run_cnt,
                p.run_time_ns,
            )
        })
        .filter(|(n, _, _)| ["fexit_", "lsm_", "on_"].iter().any(|k| n.starts_with(k)))
        .collect();
    out.sort();
    out
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Where a watched process's time goes under the default hook (fexit where trampolines work):
/// the loops, under a seccomp filter as in a container, with no monitor, with the monitor and
/// the cgroup not watched, watched, and watched with groups of programs detached (the seccomp
/// hook, the per-syscall fexit programs, the BPF-LSM programs). Rounds interleave the modes;
/// `only` keeps the modes of those numbers (1 to 8, in the printed order).
fn bench_hooks(n: u32, rounds: u32, only: Option<Vec<usize>>) -> Result<()> {
    let root = format!("/sys/fs/bpf/palisade-bench-{}", std::process::id());
    let measured = Cgroup::new("measured")?;
    let idle = Cgroup::new("idle")?;
    let loops = [
        ("exec", (n / 4).max(1)),
        ("open", n * 10),
        ("connect", n),
        ("getppid", n * 50),
    ];
    let seccomp_hook = |l: &str| l.starts_with("fexit_seccomp");
    let syscall_fexit = |l: &str| l.starts_with("fexit_") && !l.starts_with("fexit_seccomp");
    let lsm = |l: &str| l.starts_with("lsm_");
    let modes = [
        HookMode {
            name: "no monitor",
            monitor: false,
            watched: false,
            detach: |_| false,
            stats: false,
        },
        HookMode {
            name: "on, not watched",
            monitor: true,
            watched: false,
            detach: |_| false,
            stats: false,
        },
        HookMode {
            name: "on, watched",
            monitor: true,
            watched: true,
            detach: |_| false,
            stats: false,
        },
        HookMode {
            name: "watched, no seccomp hook",
            monitor: true,
            watched: true,
            detach: seccomp_hook,
            stats: false,
        },
        HookMode {
            name: "watched, no syscall fexit",
            monitor: true,
            watched: true,
            detach: syscall_fexit,
            stats: false,
        },
        HookMode {
            name: "watched, no LSM",
            monitor: true,
            watched: true,
            detach: lsm,
            stats: false,
        },
        HookMode {
            name: "watched, no fexit, no LSM",
            monitor: true,
            watched: true,
            detach: |l| l.starts_with("fexit_") || l.starts_with("lsm_"),
            stats: false,
        },
        HookMode {
            name: "watched, program stats",
            monitor: true,
            watched: true,
            detach: |_| false,
            stats: true,
        },
    ];
    let mut stats = Vec::new();
    let mut samples = vec![vec![(Vec::new(), Vec::new()); loops.len()]; modes.len()];
    let mut hook = String::new();
    let mut detached: Vec<Vec<String>> = vec![Vec::new(); modes.len()];
    let chosen = |m: usize| only.as_ref().is_none_or(|o| o.contains(&(m + 1)));
    for _ in 0..rounds {
        for (m, mode) in modes.iter().enumerate().filter(|(m, _)| chosen(*m)) {
            let run_loops = |samples: &mut Vec<(Vec<u64>, Vec<u64>)>| -> Result<()> {
                for (l, (kind, iterations)) in loops.iter().enumerate() {
                    let (wall, cpu) = run_worker_with(&measured, kind, *iterations, true)?;
                    samples[l].0.push(wall);
                    samples[l].1.push(cpu);
                }
                Ok(())
            };
            if !mode.monitor {
                run_loops(&mut samples[m])?;
                continue;
            }
            let drained = Drained::open(MonitorConfig {
                keep_loaded: false,
                ..config(&root)
            })?;
            let monitor = &drained.monitor;
            hook = monitor.features().syscall_hook.to_string();
            let links = monitor.pin_dir().join("links");
            let mut names = Vec::new();
            for entry in
                std::fs::read_dir(&links).with_context(|| format!("read {}", links.display()))?
            {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if (mode.detach)(&name) {
                    std::fs::remove_file(entry.path()).with_context(|| format!("detach {name}"))?;
                    names.push(name);
                }
            }
            names.sort();
            detached[m] = names;
            let cg = if mode.watched { &measured } else { &idle };
            let container = ContainerRef {
                cgroup_id: cgroup_id_of_dir(&cg.0)?,
                namespace: "bench".into(),
                pod: cg.0.display().to_string(),
                container: "c".into(),
                ..Default::default()
            };
            // As the shim watches a container: the built-in detections, with the credential
            // files of its root (here the node's own) looked up on every open.
            let rules = ContainerRules {
                builtins: true,
                process_root: Some(PathBuf::from("/")),
                ..Default::default()
            };
            let watch = monitor.watch(container, rules)?;
            if mode.stats {
                std::fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
            }
            let ran = run_loops(&mut samples[m]);
            if mode.stats {
                stats = program_stats();
                std::fs::write(BPF_STATS, "0").with_context(|| format!("write {BPF_STATS}"))?;
            }
            ran?;
            drop(watch);
            drained.close()?;
        }
    }
    let counts: Vec<String> = loops.iter().map(|(k, i)| format!("{k} {i}")).collect();
    println!(
        "syscall hook: {hook}; loops under a seccomp filter; iterations: {}; {rounds} rounds \
         interleaved, medians; ns per operation, wall / CPU (lower is better)",
        counts.join(", ")
    );
    println!(
        "{:<26} {:>21} {:>15} {:>17} {:>11}",
        "mode", "exec", "open", "connect", "getppid"
    );
    for (m, mode) in modes.iter().enumerate().filter(|(m, _)| chosen(*m)) {
        let cells = median_cells(&mut samples[m]);
        println!(
            "{:<26} {:>21} {:>15} {:>17} {:>11}",
            mode.name, cells[0], cells[1], cells[2], cells[3]
        );
    }
    println!("programs run in the last round's stats mode: name, runs, mean run time (ns)");
    for (name, runs, ns) in &stats {
        println!("{name:<26} {runs:>10} {:>10}", ns / runs.max(&1));
    }
    for (m, mode) in modes.iter().enumerate() {
        if !detached[m].is_empty() {
            println!("{}: detached {}", mode.name, detached[m].join(" "));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Floods the pipeline: the open loop in a cgroup watched with `report_all_opens`, so every
/// open is one event, for each number of operations; prints the rate offered, the events
/// delivered to the channel, the kernel's drops, and the rate at which they were delivered
/// (up to the last event, which waits for the reader's next poll).
fn flood(ops: &[u32]) -> Result<()> {
    let root = format!("/sys/fs/bpf/palisade-bench-{}", std::process::id());
    let measured = Cgroup::new("flood")?;
    println!("one event per open (report_all_opens); rates in events per second");
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>10} {:>12}",
        "opens", "ns/open", "offered/s", "delivered", "dropped", "delivered/s"
    );
    for &n in ops {
        let (tx, rx) = sync_channel(1 << 16);
        let drain = std::thread::spawn(move || {
            let mut count = 0u64;
            let mut last = None;
            for _ in rx.iter() {
                count += 1;
                last = Some(Instant::now());
            }
            (count, last)
        });
        let monitor = NodeMonitor::open(config(&root), tx)?;
        let rules = ContainerRules {
            report_all_opens: true,
            ..Default::default()
        };
        let watch = monitor.watch(measured.container()?, rules)?;
        let start = Instant::now();
        let (ns, _) = run_worker(&measured, "open", n)?;
        // Let the reader's next poll collect the tail before the handle goes away.
        std::thread::sleep(Duration::from_millis(200));
        let stats = watch.stats();
        drop(watch);
        drop(monitor);
        let (delivered, last) = drain
            .join()
            .map_err(|_| anyhow::anyhow!("drain thread panicked"))?;
        let span = last.map_or(Duration::ZERO, |t| t.duration_since(start));
        let rate = |events: u64, d: Duration| {
            if d.is_zero() {
                0
            } else {
                (events as f64 / d.as_secs_f64()) as u64
            }
        };
        println!(
            "{n:>10} {ns:>8} {:>12} {delivered:>12} {:>10} {:>12}",
            rate(1, Duration::from_nanos(ns)),
            stats.drops,
            rate(delivered, span),
        );
    }
    // The pin root holds the cached BPF-LSM probe answer besides the (removed) pins.
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
