//! The monitor against the running kernel (root), by theme: what is reported and to which
//! container (`attribution`), exec deny rules (`exec`), refused execs reported (`exec_refused`), connect deny rules (`connect`), egress
//! allow-lists (`egress`), socket
//! creation rules (`sockets`), shared pins, parking and the hook floor (`pins`), where the
//! syscalls are watched (`hooks`: fexit, no syscall tracepoint, where trampolines work), file
//! reads and writes the detections judge (`files`), file deny rules through BPF-LSM
//! (`file_rules`: opens; `file_ops`: removals, renames, links, attribute changes and new names;
//! `file_globs`: globs matched on each name, files made later included), ordinary calls that
//! raise nothing and real gains that do (`precision`), and a learning container's system calls
//! (`learn`). `file_common` what the file rule tests share; `harness` has the test cgroups, pin
//! roots, forked children and event waits they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attribution;
mod connect;
mod egress;
mod exec;
mod exec_refused;
mod file_common;
mod file_globs;
mod file_ops;
mod file_rules;
mod files;
mod harness;
mod hooks;
mod learn;
mod pins;
mod precision;
mod sockets;
