//! Container cgroup metrics (v1 and v2, in the protobuf types containerd expects) and OOM watching.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::reflect::{
    FieldDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageFull};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Reading a container's cgroups failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cgroup of pid {pid}: {source}")]
    ProcCgroup {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup of pid {pid}: no {what} entry in /proc/{pid}/cgroup")]
    Missing { pid: i32, what: &'static str },
    #[error("cgroup {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup metrics: encode: {0}")]
    Encode(#[source] containerd_shim::protos::protobuf::Error),
    #[error("oom watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Where a container's cgroups are, resolved once from its init pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// Unified hierarchy only (production nodes).
    V2(PathBuf),
    /// v1 controllers, each at its own directory.
    V1 {
        memory: PathBuf,
        cpuacct: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
    },
}

impl Cgroups {
    /// Finds the cgroups of `pid`: v2 when /sys/fs/cgroup is cgroup2, else the v1 controllers.
    pub fn of_pid(pid: i32) -> Result<Self, StatsError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|source| StatsError::ProcCgroup { pid, source })?;
        Self::from_proc(
            pid,
            &text,
            is_unified(Path::new(CGROUP_ROOT)),
            Path::new(CGROUP_ROOT),
        )
    }

    fn from_proc(pid: i32, text: &str, unified: bool, root: &Path) -> Result<Self, StatsError> {
        let mut by_controller: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                by_controller.insert("", path);
            }
            for c in ctrls.split(',') {
                by_controller.insert(c, path);
            }
        }
        let join = |base: &str, rel: &str| root.join(base).join(rel.trim_start_matches('/'));
        if unified {
            let rel = by_controller.get("").ok_or(StatsError::Missing {
                pid,
                what: "unified",
            })?;
            return Ok(Cgroups::V2(root.join(rel.trim_start_matches('/'))));
        }
        let get = |c: &'static str| {
            by_controller
                .get(c)
                .copied()
                .ok_or(StatsError::Missing { pid, what: c })
        };
        Ok(Cgroups::V1 {
            memory: join("memory", get("memory")?),
            cpuacct: join("cpuacct", get("cpuacct")?),
            cpu: join("cpu", get("cpu")?),
            pids: join("pids", get("pids")?),
        })
    }

    /// The metrics as the `Any` that `Stats` returns.
    pub fn metrics(&self) -> Result<Any, StatsError> {
        let (type_url, value) = match self {
            Cgroups::V2(dir) => (V2_TYPE_URL, v2_metrics(dir)?.write_to_bytes()),
            Cgroups::V1 {
                memory,
                cpuacct,
                cpu,
                pids,
            } => (
                V1_TYPE_URL,
                v1_metrics(memory, cpuacct, cpu, pids)?.write_to_bytes(),
            ),
        };
        Ok(Any {
            type_url: type_url.into(),
            value: value.map_err(StatsError::Encode)?,
            ..Default::default()
        })
    }

    /// Counts OOM kills so far, to tell a new one from an old one.
    pub fn oom_kills(&self) -> u64 {
        let file = match self {
            Cgroups::V2(dir) => dir.join("memory.events"),
            Cgroups::V1 { memory, .. } => memory.join("memory.oom_control"),
        };
        std::fs::read_to_string(file)
            .map(|t| key_values(&t).get("oom_kill").copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Resolves when the kernel reports an OOM event in this cgroup, or the cgroup goes away.
    pub async fn wait_oom(&self) -> Result<bool, StatsError> {
        match self {
            Cgroups::V1 { memory, .. } => wait_oom_v1(memory).await,
            Cgroups::V2(dir) => wait_oom_v2(dir, self.oom_kills()).await,
        }
    }
}

fn is_unified(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The `Read` error of `path`, for `map_err`.
fn read_error(path: &Path) -> impl Fn(std::io::Error) -> StatsError + '_ {
    move |source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(read_error(path))
}

fn read_u64(path: &Path) -> Result<u64, StatsError> {
    let text = read(path)?;
    let t = text.trim();
    Ok(if t == "max" {
        0
    } else {
        t.parse().unwrap_or(0)
    })
}

fn key_values(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// cgroup v1 `memory.stat`: each `MemoryStat` field and the key it is read from.
const V1_MEMORY_STAT: &[(&str, &str)] = &[
    ("cache", "cache"),
    ("rss", "rss"),
    ("rss_huge", "rss_huge"),
    ("mapped_file", "mapped_file"),
    ("dirty", "dirty"),
    ("writeback", "writeback"),
    ("pg_pg_in", "pgpgin"),
    ("pg_pg_out", "pgpgout"),
    ("pg_fault", "pgfault"),
    ("pg_maj_fault", "pgmajfault"),
    ("inactive_anon", "inactive_anon"),
    ("active_anon", "active_anon"),
    ("inactive_file", "inactive_file"),
    ("active_file", "active_file"),
    ("unevictable", "unevictable"),
    ("hierarchical_memory_limit", "hierarchical_memory_limit"),
    ("total_cache", "total_cache"),
    ("total_rss", "total_rss"),
    ("total_mapped_file", "total_mapped_file"),
    ("total_pg_fault", "total_pgfault"),
    ("total_pg_maj_fault", "total_pgmajfault"),
    ("total_inactive_anon", "total_inactive_anon"),
    ("total_active_anon", "total_active_anon"),
    ("total_inactive_file", "total_inactive_file"),
    ("total_active_file", "total_active_file"),
    ("total_unevictable", "total_unevictable"),
];
/// cgroup v1 `cpu.stat`: each `Throttle` field and its key.
const V1_THROTTLE: &[(&str, &str)] = &[
    ("periods", "nr_periods"),
    ("throttled_periods", "nr_throttled"),
    ("throttled_time", "throttled_time"),
];
/// cgroup v2 `memory.stat` keys, each read into the `MemoryStat` field of its name.
const V2_MEMORY_STAT: &[&str] = &[
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
];
/// cgroup v2 `memory.events` keys, each read into the `MemoryEvents` field of its name.
const V2_MEMORY_EVENTS: &[&str] = &["low", "high", "max", "oom", "oom_kill"];
/// cgroup v2 `cpu.stat` keys, each read into the `CPUStat` field of its name.
const V2_CPU_STAT: &[&str] = &[
    "usage_usec",
    "user_usec",
    "system_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
];

/// Sets each `u64` field of `msg` named in `fields` (field, key) to the value of its key in
/// `kv`, 0 where the key is missing. A name that is not a `u64` field of `M` is passed over
/// (the tests check the tables).
fn fill<'a, M: MessageFull>(
    msg: &mut M,
    kv: &HashMap<&str, u64>,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let descriptor = M::descriptor();
    for (field, key) in fields {
        let Some(f) = descriptor.field_by_name(field) else {
            continue;
        };
        if is_u64(&f) {
            let value = kv.get(key).copied().unwrap_or(0);
            f.set_singular_field(msg, ReflectValueBox::U64(value));
        }
    }
}

/// Whether `f` is a singular `u64` field.
fn is_u64(f: &FieldDescriptor) -> bool {
    matches!(
        f.runtime_field_type(),
        RuntimeFieldType::Singular(RuntimeType::U64)
    )
}

/// A message of `M` with `fields` (field, key) read from the key-value file at `path`, as
/// [`fill`] does it.
fn stat_file<'a, M: MessageFull>(
    path: &Path,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<M, StatsError> {
    let mut msg = M::new();
    fill(&mut msg, &key_values(&read(path)?), fields);
    Ok(msg)
}

/// A table of keys read into the fields of the same name, as [`fill`] takes it.
fn same_names<'a>(keys: &'a [&'a str]) -> impl Iterator<Item = (&'a str, &'a str)> {
    keys.iter().map(|k| (*k, *k))
}

/// A `PidsStat` (v1 or v2: the same two fields) from the pids controller's directory.
fn pids_stat<P: MessageFull>(dir: &Path) -> P {
    let mut p = P::new();
    let kv = HashMap::from([
        ("current", read_u64(&dir.join("pids.current")).unwrap_or(0)),
        ("limit", read_u64(&dir.join("pids.max")).unwrap_or(0)),
    ]);
    fill(&mut p, &kv, same_names(&["current", "limit"]));
    p
}

fn v1_metrics(
    memory: &Path,
    cpuacct: &Path,
    cpu: &Path,
    pids: &Path,
) -> Result<v1::Metrics, StatsError> {
    let mut m = v1::Metrics::new();
    let mut mem: v1::MemoryStat =
        stat_file(&memory.join("memory.stat"), V1_MEMORY_STAT.iter().copied())?;
    let mut usage = v1::MemoryEntry::new();
    usage.usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
    usage.limit = read_u64(&memory.join("memory.limit_in_bytes"))?;
    usage.max = read_u64(&memory.join("memory.max_usage_in_bytes")).unwrap_or(0);
    usage.failcnt = read_u64(&memory.join("memory.failcnt")).unwrap_or(0);
    mem.usage = Some(usage).into();
    m.memory = Some(mem).into();

    let mut cpu_usage = v1::CPUUsage::new();
    cpu_usage.total = read_u64(&cpuacct.join("cpuacct.usage"))?;
    cpu_usage.per_cpu = read(&cpuacct.join("cpuacct.usage_percpu"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let Ok(t) = read(&cpuacct.join("cpuacct.stat")) {
        // user and system are in clock ticks; containerd reports nanoseconds
        let kv = key_values(&t);
        let tick_ns = 1_000_000_000 / clock_ticks();
        cpu_usage.user = kv.get("user").copied().unwrap_or(0) * tick_ns;
        cpu_usage.kernel = kv.get("system").copied().unwrap_or(0) * tick_ns;
    }
    let throttle: v1::Throttle =
        stat_file(&cpu.join("cpu.stat"), V1_THROTTLE.iter().copied()).unwrap_or_default();
    let mut cpu_stat = v1::CPUStat::new();
    cpu_stat.usage = Some(cpu_usage).into();
    cpu_stat.throttling = Some(throttle).into();
    m.cpu = Some(cpu_stat).into();
    m.pids = Some(pids_stat(pids)).into();
    Ok(m)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn v2_metrics(dir: &Path) -> Result<v2::Metrics, StatsError> {
    let mut m = v2::Metrics::new();
    let mut mem: v2::MemoryStat = stat_file(&dir.join("memory.stat"), same_names(V2_MEMORY_STAT))?;
    mem.usage = read_u64(&dir.join("memory.current"))?;
    mem.usage_limit = read_u64(&dir.join("memory.max")).unwrap_or(0);
    mem.swap_usage = read_u64(&dir.join("memory.swap.current")).unwrap_or(0);
    mem.swap_limit = read_u64(&dir.join("memory.swap.max")).unwrap_or(0);
    m.memory = Some(mem).into();

    let events =
        stat_file::<v2::MemoryEvents>(&dir.join("memory.events"), same_names(V2_MEMORY_EVENTS));
    if let Ok(ev) = events {
        m.memory_events = Some(ev).into();
    }

    let cpu: v2::CPUStat = stat_file(&dir.join("cpu.stat"), same_names(V2_CPU_STAT))?;
    m.cpu = Some(cpu).into();
    m.pids = Some(pids_stat(dir)).into();
    Ok(m)
}

/// v1: an eventfd registered on memory.oom_control through cgroup.event_control.
async fn wait_oom_v1(memory: &Path) -> Result<bool, StatsError> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let watch_err = |source| StatsError::Watch {
        path: memory.to_path_buf(),
        source,
    };
    let efd =
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(watch_err)?;
    let control = std::fs::File::open(memory.join("memory.oom_control"))
        .map_err(read_error(&memory.join("memory.oom_control")))?;
    let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    std::fs::write(memory.join("cgroup.event_control"), line)
        .map_err(read_error(&memory.join("cgroup.event_control")))?;
    let afd = crate::stdio::async_fd(efd).map_err(read_error(memory))?;
    loop {
        let mut guard = afd.readable().await.map_err(read_error(memory))?;
        match guard.try_io(|fd| fd.get_ref().read().map_err(std::io::Error::from)) {
            Ok(Ok(_)) => {
                // The eventfd also fires when the cgroup is removed.
                return Ok(memory.join("memory.oom_control").exists());
            }
            Ok(Err(source)) => return Err(read_error(memory)(source)),
            Err(_would_block) => continue,
        }
    }
}

/// `Inotify` offers `AsFd` only; the reactor wants `AsRawFd`.
struct InotifyFd(nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// v2: inotify on memory.events, comparing the oom_kill count.
async fn wait_oom_v2(dir: &Path, mut seen: u64) -> Result<bool, StatsError> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let events = dir.join("memory.events");
    let watch_err = |source| StatsError::Watch {
        path: events.clone(),
        source,
    };
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(watch_err)?;
    ino.add_watch(
        &events,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
    )
    .map_err(watch_err)?;
    let afd = crate::stdio::async_fd(InotifyFd(ino)).map_err(read_error(&events))?;
    loop {
        let mut guard = afd.readable().await.map_err(read_error(&events))?;
        match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
            Ok(Ok(_)) => {
                let Ok(text) = std::fs::read_to_string(&events) else {
                    return Ok(false);
                };
                let now = key_values(&text).get("oom_kill").copied().unwrap_or(0);
                if now > seen {
                    return Ok(true);
                }
                seen = now;
            }
            Ok(Err(source)) => return Err(read_error(&events)(source)),
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a cgroup directory's files, (name, content) each.
    fn write_files(dir: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    /// Every name in the field tables is a `u64` field of its message, so [`fill`] sets them all.
    #[test]
    fn field_tables_name_u64_fields() {
        fn check<M: MessageFull>(fields: &[&str]) {
            let d = M::descriptor();
            for field in fields {
                let f = d
                    .field_by_name(field)
                    .unwrap_or_else(|| panic!("{}: no field {field}", d.name()));
                assert!(is_u64(&f), "{}.{field} is not a u64", d.name());
            }
        }
        let first = |t: &[(&'static str, &str)]| t.iter().map(|(f, _)| *f).collect::<Vec<_>>();
        check::<v1::MemoryStat>(&first(V1_MEMORY_STAT));
        check::<v1::Throttle>(&first(V1_THROTTLE));
        check::<v2::MemoryStat>(V2_MEMORY_STAT);
        check::<v2::MemoryEvents>(V2_MEMORY_EVENTS);
        check::<v2::CPUStat>(V2_CPU_STAT);
        check::<v1::PidsStat>(&["current", "limit"]);
        check::<v2::PidsStat>(&["current", "limit"]);
    }

    #[test]
    fn parses_hybrid_proc_cgroup() {
        let text = "12:pids:/k8s/abc\n5:cpu,cpuacct:/k8s/abc\n4:memory:/k8s/abc\n0::/k8s/abc\n";
        let c = Cgroups::from_proc(1, text, false, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(
            c,
            Cgroups::V1 {
                memory: "/sys/fs/cgroup/memory/k8s/abc".into(),
                cpuacct: "/sys/fs/cgroup/cpuacct/k8s/abc".into(),
                cpu: "/sys/fs/cgroup/cpu/k8s/abc".into(),
                pids: "/sys/fs/cgroup/pids/k8s/abc".into(),
            }
        );
        let c = Cgroups::from_proc(
            1,
            "0::/kubepods/pod1/c1\n",
            true,
            Path::new("/sys/fs/cgroup"),
        )
        .unwrap();
        assert_eq!(c, Cgroups::V2("/sys/fs/cgroup/kubepods/pod1/c1".into()));
        let err = Cgroups::from_proc(7, "0::/x\n", false, Path::new("/sys/fs/cgroup")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup of pid 7: no memory entry in /proc/7/cgroup"
        );
    }

    #[test]
    fn v2_metrics_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_files(
            d,
            &[
                (
                    "memory.stat",
                    "anon 100\nfile 50\ninactive_file 20\npgfault 7\n",
                ),
                ("memory.current", "4096\n"),
                ("memory.max", "max\n"),
                ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
                (
                    "cpu.stat",
                    "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
                ),
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
            ],
        );
        let c = Cgroups::V2(d.to_path_buf());
        let any = c.metrics().unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.inactive_file, 20);
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(c.oom_kills(), 1);
    }

    #[test]
    fn v1_metrics_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_files(
            d,
            &[
                ("memory.stat", "cache 10\nrss 20\ntotal_inactive_file 5\n"),
                ("memory.usage_in_bytes", "8192\n"),
                ("memory.limit_in_bytes", "1048576\n"),
                ("cpuacct.usage", "123456\n"),
                ("cpuacct.usage_percpu", "100000 23456 \n"),
                ("pids.current", "2\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        let c = Cgroups::V1 {
            memory: d.into(),
            cpuacct: d.into(),
            cpu: d.into(),
            pids: d.into(),
        };
        let any = c.metrics().unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 8192);
        assert_eq!(m.memory.usage.limit, 1048576);
        assert_eq!(m.memory.total_inactive_file, 5);
        assert_eq!(m.cpu.usage.total, 123456);
        assert_eq!(m.cpu.usage.per_cpu, vec![100000, 23456]);
        assert_eq!(m.pids.current, 2);
        assert_eq!(c.oom_kills(), 2);
    }
}
