//! The runtime's own work in a container, told apart from the workload's: runc's init
//! (entering the container for its first process or for a CRI exec) and `palisade-init`, up
//! to their exec of the workload's program, are neither learned as the workload's nor judged
//! as its departures.
//!
//! A CRI exec runs, in the container's cgroup, runc's init (which looks the user up in
//! `/etc/passwd` and `/etc/group`), then `palisade-init` (which reads `/.palisade/plan.json`
//! and the landlock rules' paths), then the command asked for. The first two are the
//! runtime's: they run before the workload's program and before landlock applies, and their
//! files (`/proc/<pid>/...` among them) are no part of what the workload does. What the
//! exec'd program does still counts, and so does the exec itself.
//!
//! A process is the runtime's when it carries the runtime's mark (its executable is
//! `palisade-init`, or its name is one runc's init gives itself, `runc:[2:INIT]`) and it is not
//! known as the workload's: a process that executed any other program in the container, or
//! was forked by one, is the workload's for the rest of its life, whatever name it gives
//! itself later (a name is the process's to set). A process the events do not place (its
//! fork was lost) has no mark and counts as the workload's: the mistake can only count the
//! runtime's work as the workload's, never hide the workload's.

use std::collections::HashSet;

use palisade_monitor::{EventKind, MonitorEvent};

/// Workload processes followed per container; past it no process is taken for the runtime's
/// any more (its noise counts, the workload's work is never hidden).
const MAX_WORKLOAD_PIDS: usize = 32_768;

/// palisade-init in the container, the runtime's last step before the workload's program.
pub(crate) const RUNTIME_INIT: &str = palisade_sandbox::install::INIT_PATH;

/// The name runc's init gives its threads (`runc:[0:PARENT]`, `runc:[1:CHILD]`,
/// `runc:[2:INIT]`): only the last one enters the container's cgroup.
const RUNC_INIT_PREFIX: &str = "runc:[";

/// The processes of one container that are the workload's, followed through its exec, fork
/// and exit events.
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    workload: HashSet<u32>,
    /// The table was full once: no process is taken for the runtime's since.
    saturated: bool,
}

impl Lineage {
    /// Follows `ev` and tells whether it is the runtime's work. An exec is never the runtime's
    /// here (the caller judges it by its file and parent: an exec of `palisade-init` is the
    /// runtime's, an exec by it is the workload's, started by the runtime).
    pub(crate) fn runtime(&mut self, ev: &MonitorEvent) -> bool {
        let pid = ev.process.pid;
        match &ev.kind {
            EventKind::Exec {
                filename,
                killed,
                refused,
                ..
            } => {
                if !killed && !refused && filename != RUNTIME_INIT {
                    self.mark(pid);
                }
                false
            }
            EventKind::Fork { child_pid } => {
                if self.workload.contains(&pid) {
                    self.mark(*child_pid);
                }
                false
            }
            EventKind::Exit { .. } => {
                self.workload.remove(&pid);
                false
            }
            _ => {
                !self.saturated
                    && !self.workload.contains(&pid)
                    && (ev.process.binary == RUNTIME_INIT
                        || ev.process.comm.starts_with(RUNC_INIT_PREFIX))
            }
        }
    }

    fn mark(&mut self, pid: u32) {
        if self.workload.len() >= MAX_WORKLOAD_PIDS && !self.workload.contains(&pid) {
            self.saturated = true;
            return;
        }
        self.workload.insert(pid);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use palisade_monitor::{ContainerRef, ProcessInfo};

    use super::*;

    fn ev(pid: u32, comm: &str, binary: &str, kind: EventKind) -> MonitorEvent {
        MonitorEvent {
            time: SystemTime::UNIX_EPOCH,
            slot: 1,
            container: Arc::new(ContainerRef::default()),
            process: ProcessInfo {
                pid,
                comm: comm.into(),
                binary: binary.into(),
                ..ProcessInfo::default()
            },
            parent_binary: String::new(),
            kind,
            findings: Vec::new(),
        }
    }

    fn exec(filename: &str) -> EventKind {
        crate::test_support::exec_event(filename, "runc", false)
    }

    fn open(path: &str) -> EventKind {
        EventKind::Open {
            path: path.into(),
            dirfd: -100,
            flags: 0,
            result: 3,
            secret: false,
            credential: false,
            system_dir: false,
        }
    }

    const RUNC: &str = "runc:[2:INIT]";
    const RUNC_EXE: &str = "/memfd:runc_cloned:/proc/self/exe (deleted)";

    #[test]
    fn a_cri_exec_is_the_runtime_until_it_runs_the_command() {
        let mut l = Lineage::default();
        // runc's init looks the user up, then runs palisade-init, which reads its plan.
        assert!(l.runtime(&ev(40, RUNC, RUNC_EXE, open("/etc/passwd"))));
        assert!(!l.runtime(&ev(40, RUNC, RUNC_EXE, exec(RUNTIME_INIT))));
        assert!(l.runtime(&ev(
            40,
            "palisade-init",
            RUNTIME_INIT,
            open("/.palisade/plan.json")
        )));
        assert!(l.runtime(&ev(
            40,
            "palisade-init",
            RUNTIME_INIT,
            open("/proc/40/status")
        )));
        // The command: its exec and everything it and its children do are the workload's.
        assert!(!l.runtime(&ev(40, "palisade-init", RUNTIME_INIT, exec("/bin/cat"))));
        assert!(!l.runtime(&ev(40, "cat", "/bin/cat", open("/www/data/seed"))));
        assert!(!l.runtime(&ev(
            40,
            "cat",
            "/bin/cat",
            EventKind::Fork { child_pid: 41 }
        )));
        assert!(!l.runtime(&ev(41, "cat", "/bin/cat", open("/etc/shadow"))));
    }

    #[test]
    fn a_workload_process_naming_itself_like_runc_is_still_the_workload() {
        let mut l = Lineage::default();
        assert!(!l.runtime(&ev(50, "sh", "/bin/sh", exec("/bin/sh"))));
        assert!(!l.runtime(&ev(50, RUNC, "/bin/sh", open("/etc/shadow"))));
        // Its child too, even when it runs palisade-init itself.
        assert!(!l.runtime(&ev(50, "sh", "/bin/sh", EventKind::Fork { child_pid: 51 })));
        assert!(!l.runtime(&ev(51, "sh", "/bin/sh", exec(RUNTIME_INIT))));
        assert!(!l.runtime(&ev(51, "palisade-init", RUNTIME_INIT, open("/etc/shadow"))));
        // Gone: the number may come back as another exec's runc init.
        assert!(!l.runtime(&ev(50, "sh", "/bin/sh", EventKind::Exit { code: 0 })));
        assert!(l.runtime(&ev(50, RUNC, RUNC_EXE, open("/etc/group"))));
    }

    #[test]
    fn a_process_without_the_runtimes_mark_is_the_workload() {
        let mut l = Lineage::default();
        // Its fork was not seen: it counts.
        assert!(!l.runtime(&ev(60, "nc", "/bin/nc", open("/www/data/last"))));
        // A refused exec leaves the caller what it was.
        let mut refused =
            crate::test_support::exec_event("/usr/bin/palisade-probe", RUNTIME_INIT, false);
        if let EventKind::Exec { refused, .. } = &mut refused {
            *refused = true;
        }
        assert!(!l.runtime(&ev(61, "palisade-init", RUNTIME_INIT, refused)));
        assert!(l.runtime(&ev(
            61,
            "palisade-init",
            RUNTIME_INIT,
            open("/proc/61/status")
        )));
    }

    #[test]
    fn a_full_table_takes_no_process_for_the_runtime() {
        let mut l = Lineage::default();
        for pid in 0..MAX_WORKLOAD_PIDS as u32 {
            l.mark(pid);
        }
        assert!(l.runtime(&ev(u32::MAX, RUNC, RUNC_EXE, open("/etc/passwd"))));
        l.mark(u32::MAX - 1);
        assert!(!l.runtime(&ev(u32::MAX, RUNC, RUNC_EXE, open("/etc/passwd"))));
    }
}
