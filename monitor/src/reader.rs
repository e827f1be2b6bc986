//! A handle's reader thread: it polls the holder's ring, decodes each record, routes it to its
//! container, runs the detections and hands the event to the handle's [`EventSink`]; once a
//! second it logs the containers whose events the kernel dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use libbpf_rs::{MapHandle, RingBufferBuilder};
use tracing::{debug, warn};

use crate::detect;
use crate::error::MonitorError;
use crate::event::{
    file_path, parse_sockaddr, EventKind, FileOp, Finding, MonitorEvent, ProcessInfo, Syscall,
};
use crate::raw::{self, cstr, Record};
use crate::rules::{Enforcer, SockClass};
use crate::shared::{sweep_closed, EventSink, Shared, WatchEntry, CLOSE_GRACE};
use crate::skel::monitor::types;

/// Starts a handle's reader thread on `ring` (of `ring_size` bytes), delivering to `sink` and
/// counting in `lost` what it does not take, until `stop` is set. Whatever is still in the
/// ring then is delivered before the thread ends.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    sink: Box<dyn EventSink>,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ring: MapHandle,
    ring_size: u32,
) -> Result<JoinHandle<()>, MonitorError> {
    let mut reader = Reader {
        shared: shared.clone(),
        sink,
        lost,
        binaries: HashMap::new(),
        echoes: crate::execs::Echoes::default(),
    };
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&ring, move |data| {
            reader.handle(data);
            0
        })
        .map_err(|source| MonitorError::Ring {
            size: ring_size,
            source,
        })?;
    let rb = builder.build().map_err(|source| MonitorError::Ring {
        size: ring_size,
        source,
    })?;
    std::thread::Builder::new()
        .name("palisade-ring".into())
        .spawn(move || {
            let _ring = ring;
            let mut drops = HashMap::new();
            let mut checked = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = rb.poll(Duration::from_millis(50)) {
                    debug!(error = %e, "ring buffer poll");
                }
                // poll only reads rings that woke it; records submitted without a wake-up
                // are read here.
                if let Err(e) = rb.consume() {
                    debug!(error = %e, "ring buffer consume");
                }
                sweep_closed(&shared, CLOSE_GRACE);
                if checked.elapsed() >= Duration::from_secs(1) {
                    report_drops(&shared, &mut drops);
                    checked = Instant::now();
                }
            }
            // Whatever is still in the ring is delivered before the reader stops.
            let _ = rb.consume();
            sweep_closed(&shared, Duration::ZERO);
        })
        .map_err(MonitorError::Thread)
}

/// Logs, once a second at most, the containers whose events the kernel dropped since the last
/// look (the ring buffer was full): the counters themselves are in `Watch::stats`.
fn report_drops(shared: &Shared, last: &mut HashMap<u32, u64>) {
    let watches: Vec<(u32, Arc<WatchEntry>)> = shared
        .watches()
        .iter()
        .map(|(slot, entry)| (*slot, entry.clone()))
        .collect();
    last.retain(|slot, _| watches.iter().any(|(s, _)| s == slot));
    for (slot, entry) in watches {
        let key = entry.container.cgroup_id.to_ne_bytes();
        let Some(info) = raw::lookup::<types::container_info>(&shared.maps.containers, &key) else {
            continue;
        };
        let before = last.insert(slot, info.drops).unwrap_or(0);
        if info.drops > before {
            warn!(
                container_id = %entry.container.container_id,
                pod = %entry.container.pod,
                dropped = info.drops - before,
                total = info.drops,
                "ring buffer full: events dropped in the kernel"
            );
        }
    }
}

/// Decodes ring records, routes them to their container and runs the detections.
struct Reader {
    shared: Arc<Shared>,
    sink: Box<dyn EventSink>,
    lost: Arc<AtomicU64>,
    /// Executable of each watched process, from its last exec.
    binaries: HashMap<u32, String>,
    /// Exec refusals already reported by the BPF-LSM program ([`crate::execs::Echoes`]).
    echoes: crate::execs::Echoes,
}

impl Reader {
    /// One record: decoded, routed to its container (a record of a container no longer watched
    /// is dropped), judged by the detections and delivered.
    fn handle(&mut self, data: &[u8]) {
        let Some(record) = raw::decode(data) else {
            return;
        };
        let h = header(&record);
        let Some(entry) = self.shared.entry(h.slot) else {
            return;
        };
        let mut process = ProcessInfo {
            pid: h.pid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            comm: cstr(&h.comm),
            binary: String::new(),
            exe_id: None,
        };
        let mut state = entry.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut parent_binary = self.binaries.get(&h.ppid).cloned().unwrap_or_default();
        let kind = match record {
            Record::Exec(e) => {
                let entrypoint = !state.entrypoint_seen;
                self.exec_kind(&entry, &e, entrypoint, &mut process, &mut parent_binary)
            }
            Record::Exit(e) => {
                process.binary = self.binaries.remove(&h.pid).unwrap_or_default();
                EventKind::Exit { code: e.exit_code }
            }
            Record::Fork(e) => {
                // Only a binary the parent executed in the container is carried over: one
                // read from /proc (runc's init, entering from outside) would stand for the
                // kernel's answer at the child's exec.
                process.binary = self.binary_of(h.pid);
                if self.binaries.contains_key(&h.pid) {
                    self.binaries.insert(e.child_pid, process.binary.clone());
                }
                EventKind::Fork {
                    child_pid: e.child_pid,
                }
            }
            Record::Syscall(e) => {
                process.binary = self.binary_of(h.pid);
                let kind = syscall_kind(&e);
                let sourced =
                    !entry.set.sources_in_kernel && entry.set.sources.iter().any(Option::is_some);
                if sourced && matches!(kind, EventKind::Connect { .. }) {
                    process.exe_id = exe_id(h.pid);
                }
                kind
            }
            Record::Sock(e) => {
                process.binary = self.binary_of(h.pid);
                sock_kind(&entry, &e)
            }
            Record::File(e) => {
                process.binary = self.binary_of(h.pid);
                file_kind(&entry, &e)
            }
            Record::Egress(e) => {
                process.binary = self.binary_of(h.pid);
                EventKind::Egress {
                    addr: crate::egress::destination(e.addr, e.port),
                    protocol: e.protocol,
                    sendmsg: e.flags & raw::EGRESS_SENDMSG != 0,
                    refused: e.flags & raw::EGRESS_REFUSED != 0,
                }
            }
        };
        if self.echoes.echo(h.tid, &kind) {
            return;
        }
        let mut findings =
            detect::findings(&entry.set, &mut state, &process, &kind, Instant::now());
        findings.extend(crate::execs::finding(&entry.set.rules, &kind));
        findings.extend(file_denied(&entry, &kind));
        findings.extend(crate::egress::finding(
            entry.set.rules.egress.as_ref(),
            &kind,
        ));
        drop(state);
        let event = MonitorEvent {
            time: SystemTime::now(),
            slot: h.slot,
            container: entry.container.clone(),
            process,
            parent_binary,
            kind,
            findings,
        };
        if !self.sink.deliver(event) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An exec: its arguments, the binary remembered for the process (and the parent's, when
    /// the kernel read it), and the deny rule that matched.
    fn exec_kind(
        &mut self,
        entry: &WatchEntry,
        e: &types::exec_event,
        entrypoint: bool,
        process: &mut ProcessInfo,
        parent_binary: &mut String,
    ) -> EventKind {
        let filename = cstr(&e.filename);
        let mut parent = cstr(&e.parent);
        // The kernel's answer wins when it read the parent's own exec. Otherwise it only has
        // the file name of the parent's executable, and the parent never executed in the
        // container since the monitor watched it: runc's init, or a subshell forked (not
        // executed) by a process that did, whose binary user space carried over at its fork.
        if !parent.is_empty()
            && (e.flags & raw::EXEC_PARENT_FROM_EXEC != 0 || parent_binary.is_empty())
        {
            *parent_binary = parent.clone();
        } else if !parent_binary.is_empty() {
            parent = parent_binary.clone();
        }
        let len = (e.args_len as usize).min(e.args.len());
        let args = e.args[..len]
            .split(|&c| c == 0)
            .filter(|a| !a.is_empty())
            .map(|a| {
                String::from_utf8_lossy(&a.iter().map(|&c| c as u8).collect::<Vec<_>>())
                    .into_owned()
            })
            .collect();
        // A refused exec leaves the caller running its old image.
        if e.flags & raw::EXEC_REFUSED == 0 {
            self.binaries.insert(e.h.pid, filename.clone());
        }
        process.binary = filename.clone();
        let deny_rule = (e.rule > 0)
            .then(|| entry.exec_rules.get(e.rule as usize - 1).cloned())
            .flatten();
        EventKind::Exec {
            filename,
            args,
            parent,
            ino: e.ino,
            dev: e.dev,
            killed: e.flags & raw::EXEC_KILLED != 0,
            refused: e.flags & raw::EXEC_REFUSED != 0,
            deny_rule,
            entrypoint,
        }
    }

    fn binary_of(&mut self, pid: u32) -> String {
        if let Some(b) = self.binaries.get(&pid) {
            return b.clone();
        }
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The header every record starts with.
fn header(record: &Record) -> types::event_header {
    match record {
        Record::Exec(e) => e.h,
        Record::Exit(e) => e.h,
        Record::Fork(e) => e.h,
        Record::Syscall(e) => e.h,
        Record::Sock(e) => e.h,
        Record::File(e) => e.h,
        Record::Egress(e) => e.h,
    }
}

/// A file open or change a BPF-LSM file program matched, with the rule behind it.
fn file_kind(entry: &WatchEntry, e: &types::file_event) -> EventKind {
    let rule = (e.rule > 0)
        .then(|| entry.set.rules.deny_file.get(e.rule as usize - 1))
        .flatten();
    EventKind::FileDenied {
        op: FileOp::from_code(e.op),
        name: cstr(&e.name),
        target: rule
            .map(|r| r.target.path().display().to_string())
            .unwrap_or_default(),
        depth: e.depth,
        dev: e.dev,
        ino: e.ino,
        write: e.mode & FMODE_WRITE != 0,
        owner: e.owner,
        refused: e.flags & raw::FILE_REFUSED != 0,
        rule: rule.map(|r| r.name.clone()),
    }
}

/// `struct file`'s f_mode bit for an open for writing.
const FMODE_WRITE: u32 = 0x2;

/// The finding of a file open a file rule matched: refused by BPF-LSM, or (audit) reported.
fn file_denied(entry: &WatchEntry, kind: &EventKind) -> Option<Finding> {
    let EventKind::FileDenied {
        op,
        name,
        target,
        depth,
        refused,
        rule: Some(rule),
        ..
    } = kind
    else {
        return None;
    };
    let r = entry.set.rules.deny_file.iter().find(|r| &r.name == rule);
    let (action, enforcer) = crate::event::outcome(*refused, Enforcer::BpfLsm);
    Some(Finding {
        rule: rule.clone(),
        severity: r.map_or(8, |r| r.severity),
        tags: Vec::new(),
        message: match r {
            Some(r) if !r.message.is_empty() => r.message.clone(),
            _ => format!(
                "{} of {} denied",
                op.as_str(),
                file_path(target, name, *depth)
            ),
        },
        action,
        enforcer,
    })
}

/// A socket creation the `sock_create` program reported, with the rule that matched.
fn sock_kind(entry: &WatchEntry, e: &types::sock_event) -> EventKind {
    let rule = (e.rule > 0)
        .then(|| entry.set.rules.sock_create.get(e.rule as usize - 1))
        .flatten()
        .map(|r| r.name.clone());
    EventKind::SockCreate {
        family: e.family,
        kind: e.r#type,
        protocol: e.protocol,
        class: SockClass::from_code(e.class),
        refused: e.flags & raw::SOCK_REFUSED != 0,
        rule,
        exe_id: (e.dev, e.ino),
    }
}

/// Device (kernel encoding) and inode of a live process's executable.
fn exe_id(pid: u32) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((crate::rules::kernel_dev(meta.dev()), meta.ino()))
}

fn syscall_kind(e: &types::syscall_event) -> EventKind {
    let addr = || -> Option<SocketAddr> { parse_sockaddr(&e.addr, e.addr_len as usize) };
    let result = e.ret;
    let a = e.args;
    let call = |call| EventKind::Syscall {
        call,
        args: a,
        result,
    };
    match e.sys {
        1 => EventKind::Open {
            path: cstr(&e.path),
            dirfd: a[0] as i32,
            flags: a[2],
            result,
            secret: e.flags & raw::SE_SECRET != 0,
            system_dir: e.flags & raw::SE_SYSTEM_DIR != 0,
            credential: e.flags & raw::SE_CREDENTIAL != 0,
        },
        2 => EventKind::Connect {
            addr: addr(),
            result,
        },
        3 => EventKind::Bind {
            addr: addr(),
            result,
        },
        4 => EventKind::Listen {
            fd: a[0] as i32,
            backlog: a[1] as i32,
            result,
        },
        5 | 6 => EventKind::Accept {
            peer: addr(),
            result,
        },
        7 => EventKind::Socket {
            domain: a[0] as i32,
            kind: a[1] as i32,
            protocol: a[2] as i32,
            result,
        },
        8 => call(Syscall::Setuid),
        9 => call(Syscall::Setgid),
        10 => call(Syscall::Setreuid),
        11 => call(Syscall::Setregid),
        12 => call(Syscall::Setresuid),
        13 => call(Syscall::Setresgid),
        14 => call(Syscall::Capset),
        15 => call(Syscall::Setns),
        16 => call(Syscall::Unshare),
        17 => call(Syscall::Ptrace),
        18 => EventKind::Mount {
            target: cstr(&e.path),
            flags: a[3],
            result,
        },
        19 => call(Syscall::InitModule),
        20 => call(Syscall::FinitModule),
        22 | 23 => EventKind::ExecRefused {
            path: cstr(&e.path),
            dirfd: (e.sys == 23).then_some(a[0] as i32),
            result,
        },
        _ => call(Syscall::Bpf),
    }
}
