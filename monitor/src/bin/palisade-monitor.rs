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
    cgroup_id_of_dir, unified_mount, ContainerRef, ContainerRules, MonitorConfig, NodeMonitor,
};

const USAGE: &str = "usage: palisade-monitor hold <pin-root> | cleanup <pin-root> | \
bench [iterations] | bench-flood [operations...] | bench-worker <exec|open|connect> <iterations>";

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
        ["hold", root] => hold(root),
        ["cleanup", root] => {
            let removed = palisade_monitor::cleanup_stale(&config(root))?;
            println!("{}", if removed { "removed" } else { "in use" });
            Ok(())
        }
        ["bench"] => bench(2000),
        ["bench", n] => bench(n.parse().context("iterations")?),
        ["bench-flood"] => flood(&[10_000, 100_000, 1_000_000]),
        ["bench-flood", ops @ ..] => flood(
            &ops.iter()
                .map(|n| n.parse().context("operations"))
                .collect::<Result<Vec<u32>>>()?,
        ),
        ["bench-worker", kind, n] => worker(kind, n.parse().context("iterations")?),
        _ => bail!("{USAGE}"),
    }
}

/// Opens a handle, says so on stdout, and keeps it until killed.
fn hold(root: &str) -> Result<()> {
    let (tx, _rx) = sync_channel(16);
    let monitor = NodeMonitor::open(config(root), tx)?;
    println!("ready {}", monitor.pin_dir().display());
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs one loop in this process and prints nanoseconds per operation.
fn worker(kind: &str, n: u32) -> Result<()> {
    let start;
    match kind {
        "exec" => {
            start = Instant::now();
            for _ in 0..n {
                Command::new("/bin/true").status()?;
            }
        }
        "open" => {
            start = Instant::now();
            for _ in 0..n {
                drop(std::fs::File::open("/etc/hostname")?);
            }
        }
        "connect" => {
            // UDP: socket + connect + close measure the hooks without a TCP handshake and an
            // accepting thread, whose scheduling would drown them.
            let target = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
            start = Instant::now();
            for _ in 0..n {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.connect(target)?;
            }
        }
        other => bail!("unknown loop {other}"),
    }
    println!("{}", start.elapsed().as_nanos() / u128::from(n.max(1)));
    Ok(())
}

struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Result<Self> {
        let path = unified_mount()?.join(format!("palisade-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("cgroup {}", path.display()))?;
        Ok(Cgroup(path))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn run_worker(cgroup: &Cgroup, kind: &str, n: u32) -> Result<u64> {
    let procs = std::ffi::CString::new(
        cgroup
            .0
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench-worker", kind, &n.to_string()])
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
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn bench(n: u32) -> Result<()> {
    let root = format!("/sys/fs/bpf/palisade-bench-{}", std::process::id());
    let measured = Cgroup::new("measured")?;
    let others: Vec<Cgroup> = (0..19)
        .map(|i| Cgroup::new(&format!("idle{i}")))
        .collect::<Result<_>>()?;
    let loops = ["exec", "open", "connect"];
    println!("iterations per loop: {n}; ns per operation (lower is better)");
    println!(
        "{:<24} {:>10} {:>10} {:>10}",
        "mode", "exec", "open", "connect"
    );
    let row = |mode: &str| -> Result<()> {
        let mut cells = Vec::new();
        for l in loops {
            cells.push(run_worker(&measured, l, n)?);
        }
        println!(
            "{mode:<24} {:>10} {:>10} {:>10}",
            cells[0], cells[1], cells[2]
        );
        Ok(())
    };
    row("no monitor")?;
    for watched in [1usize, 20] {
        let (tx, rx) = sync_channel(1 << 16);
        let drain = std::thread::spawn(move || rx.iter().count());
        let monitor = NodeMonitor::open(config(&root), tx)?;
        let mut watches = Vec::new();
        for cg in std::iter::once(&measured)
            .chain(others.iter())
            .take(watched)
        {
            let container = ContainerRef {
                cgroup_id: cgroup_id_of_dir(&cg.0)?,
                namespace: "bench".into(),
                pod: cg.0.display().to_string(),
                container: "c".into(),
                ..Default::default()
            };
            watches.push(monitor.watch(container, ContainerRules::default())?);
        }
        row(&format!("monitor, {watched} watched"))?;
        let drops: u64 = watches.iter().map(|w| w.stats().drops).sum();
        drop(watches);
        drop(monitor);
        let events = drain
            .join()
            .map_err(|_| anyhow::anyhow!("drain thread panicked"))?;
        println!("  ({events} events delivered, {drops} dropped in the kernel)");
    }
    let _ = std::fs::remove_dir(&root);
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
        let container = ContainerRef {
            cgroup_id: cgroup_id_of_dir(&measured.0)?,
            namespace: "bench".into(),
            pod: measured.0.display().to_string(),
            container: "c".into(),
            ..Default::default()
        };
        let rules = ContainerRules {
            report_all_opens: true,
            ..Default::default()
        };
        let watch = monitor.watch(container, rules)?;
        let start = Instant::now();
        let ns = run_worker(&measured, "open", n)?;
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
    let _ = std::fs::remove_dir(&root);
    Ok(())
}
