//! `cargo xtask`: palisade's test, demo and benchmark tasks (see `cargo xtask help`).
#![doc = include_str!("../README.md")]

mod apt;
mod bench;
mod cargo;
mod containerd;
mod corpus;
mod detections;
mod env;
mod fresh;
mod fresh_machine;
mod fuzz;
mod images;
mod installer;
mod manifests;
mod matrix;
mod procs;
mod tasks;

use std::process::ExitCode;

/// The palisade shim's binary name, as containerd looks it up in PATH.
pub const SHIM_BINARY: &str = "containerd-shim-palisade-v2";

const USAGE: &str = "usage: cargo xtask <command> [options]
commands:
  test    apt packages, fmt, clippy, cargo doc, cargo test, release shim, then the CRI conformance
          suite against a private containerd (handlers runc and palisade)
  demo    private containerd, one pod + container with runtime handler palisade, exec, teardown
  bench   benchmarks against a private containerd, each suite rewriting its section of
          docs/benchmarks.md: start (pod+container start latency and shim memory per pod,
          cold and warm node), syscalls (getpid, open/close, exec loops in a container
          under runc, palisade-nomon, palisade-strict-nomon, palisade, palisade-strict),
          monitor (exec, open/close, connect loops with the monitor off, on for 1 pod,
          on among --pods pods), learn (the same loops and the pod start in a pod
          recording a learned profile against one that does not)
  detections  the detection corpus: ordinary servers from Debian's packages (nginx, Apache,
          Redis, PostgreSQL, a Python app, busybox as uid 1000) under traffic for ten minutes
          each (--short: 15 s; --seconds N), then a post-exploitation chain with benign twins;
          the results table into docs/monitor.md (--short is also a step of test)
  fuzz    the policy parser's libFuzzer target on stable, seeded with the fixtures, for
          --seconds N (default 60; also a step of test)
  fresh   build xtask as a fresh machine would (tools and headers it lacks hidden) and run
          it (also in test); --source DIR checks another checkout
  fresh-machine [-C DIR] [--keep] -- COMMAND
          run COMMAND as on a fresh machine: in a private mount namespace, overlays on
          /usr, /etc and /var uninstall every package a fresh machine lacks (files and
          dpkg's database), so COMMAND's own apt-get installs them again into the overlays
  manifests  the Kubernetes manifests under runtimeclass/ against the API schemas (also in test)
  installer-image  the DaemonSet installer image (runtimeclass/deploy/) as an OCI layout
  matrix  the monitor's and sandbox's kernel tests in qemu guests booting Debian's 5.10
          (default LSMs, then with bpf), 6.1, 6.12 and sid kernels, cgroup v2 only
          (--filter LABEL picks boots; also a step of test); with --bench, instead a
          benchmark through containerd in the 6.1 and 6.12 guests (--rounds, --scale, --pods),
          written to docs/benchmarks.md; with --detections, instead the detection corpus
          through containerd in the 6.1 guest (busybox, nginx and the chain, 60 s each;
          --seconds N, --filter 6.12 or a workload), written to docs/monitor.md
options (test):
  --suite-only        skip fmt, clippy and cargo test
  --handlers a,b      runtime handlers to test (default runc,palisade)
  --filter NAME       only the checks whose name contains NAME (repeatable)
  --no-shim           do not build or install the palisade shim
  --containerd V      containerd release: 1.6 (the system's, default), 1.7 or 2.1
                      (Debian's packages, fetched once into .palisade-run; test, demo, bench)
options (bench):
  --suite S           start, syscalls, monitor, learn or all (default all)
  --handlers a,b      start: default runc,palisade; syscalls: default
                      runc,palisade-nomon,palisade-strict-nomon,palisade,palisade-strict
                      (the first is the baseline)
  --runs N            start: measured pods per handler and node state (default 30)
  --rounds N          syscalls, monitor, learn: rounds over all configurations (default 5)
  --scale F           syscalls, monitor, learn: factor on the loops' iteration counts (default 1)
  --pods N            monitor: monitored pods in the crowded configuration (default 20)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Commands with options of their own: the kernel matrix's guest sides (run inside a
    // guest, not by hand) and the fresh-machine check.
    match args.first().map(String::as_str) {
        Some("matrix-guest-suite") => return exit(matrix::suite::guest_main(&args[1..])),
        Some("matrix-guest-detections") => return exit(matrix::detections::guest_main(&args[1..])),
        Some("run-steps") => return exit(procs::run_steps(&args[1..])),
        Some("fresh-machine") => {
            // Its command may be a whole `cargo xtask test`: a stop waits for that xtask's
            // own teardown (procs::STOP_GRACE) before it escalates.
            let children = procs::Children::default();
            let result = procs::stop_on_signal(children.clone(), || {})
                .and_then(|_stop| fresh_machine::command(&args[1..], &children));
            return exit(result);
        }
        Some(_) => {}
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let cmd = &args[0];
    // `detections --short` is that command's own flag.
    let short = cmd == "detections" && args.iter().any(|a| a == "--short");
    let rest: Vec<String> = args[1..]
        .iter()
        .filter(|a| *a != "--short")
        .cloned()
        .collect();
    let opts = match tasks::Opts::parse(if short { &rest } else { &args[1..] }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "test" => tasks::test(&opts),
        "demo" => tasks::demo(&opts),
        "bench" => bench::bench(&opts),
        "detections" => detections::command(&opts, short),
        "manifests" => tasks::manifests(),
        "fuzz" => tasks::fuzz(&opts),
        "fresh" => tasks::fresh(&opts),
        "installer-image" => installer::command(),
        "matrix" => matrix::command(&opts),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command {other}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    exit(result)
}

/// The process's exit status for a command's result, its error chain on stderr.
fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
