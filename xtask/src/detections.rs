//! `cargo xtask detections [--short]`: the detection corpus (`conformance/src/detections/`)
//! against the private containerd: each ordinary workload under traffic (ten minutes each, or
//! [`SHORT_SECONDS`] with `--short`), then the post-exploitation chain and its twins; prints
//! the results table and rewrites its section of docs/monitor.md. The short form is also a
//! step of `cargo xtask test`.

use std::path::Path;
use std::process::{Command, ExitStatus};

use anyhow::{bail, Context as _, Result};

use crate::bench;
use crate::cargo::Workspace;
use crate::env::Env;
use crate::tasks::{self, Opts};
use crate::{apt, corpus};

/// Traffic per workload in the full form.
pub const FULL_SECONDS: u64 = 600;
/// Traffic per workload in the short form (CI).
pub const SHORT_SECONDS: u64 = 15;

/// The marked sections of docs/monitor.md, per form.
const SHORT_MARKS: (&str, &str) = (
    "<!-- BEGIN xtask detections short -->",
    "<!-- END xtask detections short -->",
);
const FULL_MARKS: (&str, &str) = (
    "<!-- BEGIN xtask detections full -->",
    "<!-- END xtask detections full -->",
);

/// Seconds of traffic per workload for these options.
fn seconds(opts: &Opts, short: bool) -> u64 {
    match (opts.seconds, short) {
        (Some(s), _) => u64::from(s),
        (None, true) => SHORT_SECONDS,
        (None, false) => FULL_SECONDS,
    }
}

/// Builds (or takes from the cache) the corpus image, imports it, and runs the corpus:
/// (exit status, report).
pub fn run_in(env: &Env, ws: &Workspace, opts: &Opts, short: bool) -> Result<(ExitStatus, String)> {
    let archive = corpus::image(&ws.root.join(".palisade-run").join("images"))
        .context("build the corpus image")?;
    import(env, &archive)?;
    let results = ws.root.join(".palisade-run").join("detections.md");
    let mut cmd = corpus_cmd(
        env,
        &ws.conformance_binary(),
        seconds(opts, short),
        &opts.filters,
    );
    cmd.arg("--results").arg(&results);
    env.run_child_output(&mut cmd)
}

/// Imports the corpus image archive into `env`'s containerd as [`corpus::CORPUS_REF`].
pub fn import(env: &Env, archive: &Path) -> Result<()> {
    env.import(archive, corpus::CORPUS_REF)
}

/// `palisade-conformance detections` (the binary `suite`) against `env`: `seconds` of traffic
/// per workload, the workloads and `chain` picked by `filters` (all without one); the report
/// on stdout.
pub fn corpus_cmd(env: &Env, suite: &Path, seconds: u64, filters: &[String]) -> Command {
    let mut cmd = tasks::suite_cmd_of(env, suite, "detections");
    cmd.arg("--events-dir")
        .arg(env.events_dir())
        .arg("--corpus-image")
        .arg(corpus::CORPUS_REF)
        .arg("--workload-seconds")
        .arg(seconds.to_string());
    for f in filters {
        cmd.arg("--filter").arg(f);
    }
    cmd
}

/// The short form as a step of `cargo xtask test` (not when the run picks handlers, checks or
/// no shim): its name and outcome; a set-up error counts as one failure.
pub fn test_step(
    env: &Env,
    ws: &Workspace,
    opts: &Opts,
) -> Option<(&'static str, (ExitStatus, String))> {
    if opts.handlers.is_some() || !opts.filters.is_empty() || opts.no_shim {
        return None;
    }
    let run = run_in(env, ws, &Opts::default(), true).unwrap_or_else(|e| {
        (
            std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
            format!("detection corpus: {e:#}\n\n0 passed, 1 failed\n"),
        )
    });
    Some(("detection corpus, short form", run))
}

/// `cargo xtask detections [--short] [--seconds N] [--filter NAME]`.
pub fn command(opts: &Opts, short: bool) -> Result<()> {
    let ws = Workspace::locate()?;
    let (slot, _stop) = tasks::install_signal_teardown(ws.children.clone())?;
    apt::ensure_packages()?;
    let shim = ws.build_shim()?;
    let started = std::time::Instant::now();
    let load_before = bench::loadavg();
    let (st, out) = tasks::with_env(&ws, &slot, Some(shim), None, None, |env| {
        run_in(env, &ws, opts, short)
    })?;
    let took = started.elapsed().as_secs();
    print!("{out}");
    println!("detections: took {} min {} s", took / 60, took % 60);
    // The doc gets complete runs of all of it only.
    if opts.filters.is_empty() && st.code().is_some() && out.contains(" passed, ") {
        let header = format!(
            "{} Environment set-up and image import included (image build not), the run took {} min {} s.",
            bench::section_header(&command_line(opts, short), &load_before, &bench::loadavg()),
            took / 60,
            took % 60
        );
        let marks = if short { SHORT_MARKS } else { FULL_MARKS };
        let doc = ws.root.join("docs/monitor.md");
        write_section(&doc, marks, &header, &out)?;
        eprintln!("xtask: wrote {} ({})", doc.display(), marks.0);
    }
    if !st.success() {
        bail!("the detection corpus failed ({st})");
    }
    Ok(())
}

fn command_line(opts: &Opts, short: bool) -> String {
    let mut c = String::from("cargo xtask detections");
    if short {
        c += " --short";
    }
    if let Some(s) = opts.seconds {
        c += &format!(" --seconds {s}");
    }
    c
}

/// Replaces the marked section of `doc` (appends it when the marks are missing).
pub fn write_section(
    doc: &Path,
    (begin, end): (&str, &str),
    header: &str,
    body: &str,
) -> Result<()> {
    let current =
        std::fs::read_to_string(doc).with_context(|| format!("read {}", doc.display()))?;
    let section = format!("{begin}\n{header}\n\n{}\n{end}", body.trim());
    let updated = replace_marked(&current, begin, end, &section);
    std::fs::write(doc, updated).with_context(|| format!("write {}", doc.display()))
}

fn replace_marked(current: &str, begin: &str, end: &str, section: &str) -> String {
    match (current.find(begin), current.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &current[..b], &current[e + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", current.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_sets_the_traffic_time() {
        let o = Opts::parse(&[]).unwrap();
        assert_eq!(seconds(&o, true), SHORT_SECONDS);
        assert_eq!(command_line(&o, true), "cargo xtask detections --short");
        assert_eq!(seconds(&o, false), FULL_SECONDS);
        assert_eq!(command_line(&o, false), "cargo xtask detections");
        let o = Opts::parse(&["--seconds".into(), "30".into()]).unwrap();
        assert_eq!(seconds(&o, true), 30);
        assert_eq!(
            command_line(&o, false),
            "cargo xtask detections --seconds 30"
        );
    }

    #[test]
    fn the_marked_section_is_replaced_or_appended() {
        let (b, e) = SHORT_MARKS;
        let doc = format!("# M\n\n{b}\nold\n{e}\n\ntail\n");
        let out = replace_marked(&doc, b, e, &format!("{b}\nnew\n{e}"));
        assert_eq!(out, format!("# M\n\n{b}\nnew\n{e}\n\ntail\n"));
        let out = replace_marked("# M\n", b, e, &format!("{b}\nx\n{e}"));
        assert_eq!(out, format!("# M\n\n{b}\nx\n{e}\n"));
    }
}
