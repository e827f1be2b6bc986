//! The detection corpus (`palisade-conformance detections`): ordinary server workloads built
//! from Debian's packages under generated traffic, and a post-exploitation chain of steps
//! with benign twins, in palisade pods; every event raised for them tallied per detection and
//! graded against what issue 18 demands ([`expect`]).

pub mod attacks;
pub mod clients;
pub mod expect;
pub mod workloads;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use self::attacks::{Step, StepRun};
use self::expect::Grade;
use self::workloads::{WorkloadRun, WORKLOADS};
use crate::cri::Cri;
use crate::security::eventlog::field;
use crate::security::{PALISADE, RUNC};
use crate::suite::{Ctx, Settings};

/// The command's own options (the rest are the suite's [`Settings`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// The corpus image (servers from Debian's packages), imported by the harness.
    pub corpus_image: String,
    /// How long each workload is driven.
    pub workload_seconds: u64,
    /// Where the results table is written (markdown), besides stdout.
    pub results: Option<PathBuf>,
}

impl Options {
    /// Takes this command's flags out of `args`, leaving the suite's.
    pub fn take(args: &mut Vec<String>) -> Result<Self> {
        let mut o = Options {
            corpus_image: String::new(),
            workload_seconds: 20,
            results: None,
        };
        let mut i = 0;
        while i < args.len() {
            let flag = args[i].as_str();
            if !matches!(flag, "--corpus-image" | "--workload-seconds" | "--results") {
                i += 1;
                continue;
            }
            let v = args
                .get(i + 1)
                .cloned()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag {
                "--corpus-image" => o.corpus_image = v,
                "--workload-seconds" => {
                    o.workload_seconds = v.parse().context("--workload-seconds")?
                }
                _ => o.results = Some(v.into()),
            }
            args.drain(i..i + 2);
        }
        if o.corpus_image.is_empty() {
            bail!("--corpus-image is required");
        }
        Ok(o)
    }
}

/// Everything one run saw.
pub struct Results {
    /// The chain as listed, run or not.
    pub chain: Vec<Step>,
    pub workloads: Vec<WorkloadRun>,
    pub steps: Vec<StepRun>,
    pub seconds_each: u64,
}

/// Runs the workloads (those whose name contains a `--filter`, all without one), then the
/// chain; returns the rendered report and whether it passed.
pub async fn run(settings: &Settings, opts: &Options) -> Result<(String, bool)> {
    let cri = Cri::connect(&settings.cri_socket).await?;
    let tag = format!("c{}", std::process::id());
    let selected = |name: &str| {
        settings.filter.is_empty() || settings.filter.iter().any(|f| name.contains(f.as_str()))
    };
    let mut results = Results {
        chain: attacks::steps()?,
        workloads: Vec::new(),
        steps: Vec::new(),
        seconds_each: opts.workload_seconds,
    };
    for w in WORKLOADS.iter().filter(|w| selected(w.name)) {
        let dir = settings.work_dir.join(w.pod);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let ctx = Ctx::new(&cri, settings, PALISADE, w.pod, dir, &tag);
        eprintln!(
            "corpus: workload {} for {} s of traffic",
            w.name, opts.workload_seconds
        );
        let r = workloads::run(
            &ctx,
            w,
            &opts.corpus_image,
            Duration::from_secs(opts.workload_seconds),
        )
        .await;
        let cleaned = ctx.cleanup().await;
        let r = r.with_context(|| format!("workload {}", w.name))?;
        cleaned?;
        eprintln!(
            "corpus: workload {}: {} requests ok, {} failed, {} events, exit code {}",
            w.name,
            r.requests_ok,
            r.requests_failed,
            r.events.len(),
            r.exit_code
        );
        results.workloads.push(r);
    }
    if selected("chain") {
        let dir = settings.work_dir.join("corpus-chain");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let ctx = Ctx::new(&cri, settings, PALISADE, "corpus-chain", dir.clone(), &tag);
        let neighbour = Ctx::new(&cri, settings, RUNC, "corpus-neighbour", dir, &tag);
        let r = attacks::run(&ctx, &neighbour, &opts.corpus_image, &results.chain).await;
        let cleaned = (ctx.cleanup().await, neighbour.cleanup().await);
        results.steps = r.context("the post-exploitation chain")?;
        cleaned.0?;
        cleaned.1?;
    }
    let grades = expect::grade(&results.workloads, &results.steps);
    let text = render(&results, &grades);
    if let Some(path) = &opts.results {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    let failed = grades.iter().any(|(_, g)| matches!(g, Grade::Fail(_)));
    Ok((text, !failed))
}

/// `rule ×n` for every rule among `events`, by count.
fn rule_counts(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        let name = format!("{}/{}", field(e, "/source"), field(e, "/rule/name"));
        *m.entry(name).or_insert(0) += 1;
    }
    m
}

fn counts_text(events: &[Value]) -> String {
    let m = rule_counts(events);
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(r, n)| format!("{r} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per distinct (source/rule, binary, message) among `events`, with its count.
fn describe(whose: &str, events: &[Value]) -> Vec<String> {
    let mut m: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for e in events {
        let key = (
            format!("{}/{}", field(e, "/source"), field(e, "/rule/name")),
            field(e, "/process/binary").to_string(),
            field(e, "/rule/message").chars().take(160).collect(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m.into_iter()
        .map(|((rule, bin, msg), n)| {
            let bin = if bin.is_empty() { "-".into() } else { bin };
            format!("{whose}: {rule} ×{n} by {bin}: {msg}")
        })
        .collect()
}

/// A markdown table's header row and the separator under it.
fn table_head(out: &mut String, columns: &[&str]) {
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(columns.len()));
}

/// One row of a markdown table.
fn table_row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// The three tables (per detection, per workload, per step), the graded items that did not
/// pass, and the closing `N passed, N failed` line.
pub fn render(r: &Results, grades: &[(String, Grade)]) -> String {
    let mut out = String::new();
    // Per detection.
    let mut rules: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    for s in &r.chain {
        rules.entry(s.rule.clone()).or_default();
    }
    for (run, s) in r.steps.iter().zip(&r.chain) {
        let row = rules.entry(s.rule.clone()).or_default();
        if run.reported {
            row[0] += 1;
        } else {
            row[1] += 1;
        }
        for e in &run.step_events {
            let rule = field(e, "/rule/name");
            if rule != s.rule {
                rules.entry(rule.to_string()).or_default()[4] += 1;
            }
        }
        for e in &run.twin_events {
            rules.entry(field(e, "/rule/name").to_string()).or_default()[3] += 1;
        }
    }
    for w in &r.workloads {
        for e in &w.events {
            rules.entry(field(e, "/rule/name").to_string()).or_default()[2] += 1;
        }
    }
    let _ = writeln!(
        out,
        "Per detection: true positives = chain steps reported under the rule; missed = steps \
         expecting it that were not; false positives = its events on the ordinary workloads \
         and on the benign twins; other steps = its events on steps that expect another rule.\n"
    );
    table_head(
        &mut out,
        &[
            "rule",
            "true positives",
            "missed",
            "false positives (workloads)",
            "false positives (twins)",
            "on other steps",
        ],
    );
    for (rule, counts) in &rules {
        let mut cells = vec![format!("`{rule}`")];
        cells.extend(counts.iter().map(usize::to_string));
        table_row(&mut out, &cells);
    }
    // Per workload.
    let _ = writeln!(
        out,
        "\nPer workload ({} s of traffic each, start-up and shutdown included in the time and \
         the events):\n",
        r.seconds_each
    );
    table_head(
        &mut out,
        &[
            "workload",
            "seconds",
            "requests ok / failed",
            "events",
            "events per minute",
            "compromise kills",
            "exit code",
            "events by source/rule",
        ],
    );
    for w in &r.workloads {
        table_row(
            &mut out,
            &[
                w.name.to_string(),
                format!("{:.0}", w.seconds),
                format!("{} / {}", w.requests_ok, w.requests_failed),
                w.events.len().to_string(),
                format!("{:.1}", w.per_minute()),
                w.compromise_kills().to_string(),
                w.exit_code.to_string(),
                counts_text(&w.events),
            ],
        );
    }
    // Per step.
    let _ = writeln!(out, "\nPer step of the chain (and its benign twin):\n");
    table_head(
        &mut out,
        &[
            "step",
            "tactic",
            "what",
            "rule",
            "step",
            "twin",
            "twin",
            "events of the step",
        ],
    );
    for (run, s) in r.steps.iter().zip(&r.chain) {
        let twin = if run.twin_events.is_empty() {
            "silent".to_string()
        } else {
            format!("noisy: {}", counts_text(&run.twin_events))
        };
        let step = if run.reported { "reported" } else { "missed" };
        table_row(
            &mut out,
            &[
                s.id.clone(),
                s.tactic.clone(),
                s.what.clone(),
                format!("`{}`", s.rule),
                step.to_string(),
                s.twin_what.clone(),
                twin,
                counts_text(&run.step_events),
            ],
        );
    }
    // What raised each event (deduplicated), for whoever fixes the detection.
    let mut details = Vec::new();
    for w in &r.workloads {
        details.extend(describe(&format!("workload {}", w.name), &w.events));
    }
    for run in &r.steps {
        details.extend(describe(&format!("twin of {}", run.id), &run.twin_events));
    }
    if !details.is_empty() {
        let _ = writeln!(
            out,
            "\nWhat raised the events on the workloads and twins (source/rule, binary, message; \
             repeats folded):\n```\n{}\n```",
            details.join("\n")
        );
    }
    // One line per step whose grade `why` picks out, with the reason it gives.
    let lines = |why: fn(&Grade) -> Option<&String>| -> Vec<String> {
        grades
            .iter()
            .filter_map(|(id, g)| why(g).map(|why| format!("  {id}: {why}")))
            .collect()
    };
    let known = lines(|g| match g {
        Grade::KnownMiss(why) => Some(why),
        _ => None,
    });
    let failed = lines(|g| match g {
        Grade::Fail(why) => Some(why),
        _ => None,
    });
    let passed = grades.iter().filter(|(_, g)| *g == Grade::Pass).count();
    if !known.is_empty() {
        let _ = writeln!(
            out,
            "\nknown misses (KNOWN_MISSES in conformance/src/detections/expect.rs):\n```\n{}\n```",
            known.join("\n")
        );
    }
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailures:\n```\n{}\n```", failed.join("\n"));
    }
    let _ = writeln!(out, "\n{} known misses", known.len());
    let _ = writeln!(out, "{passed} passed, {} failed", failed.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_markdown_with_a_separator_per_column() {
        let mut out = String::new();
        table_head(&mut out, &["rule", "missed"]);
        table_row(&mut out, &["`shell`".to_string(), "0".to_string()]);
        assert_eq!(out, "| rule | missed |\n| --- | --- |\n| `shell` | 0 |\n");
    }
}
