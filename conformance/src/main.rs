//! `palisade-conformance`: runs the CRI conformance suite or removes leftover pods.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use palisade_conformance::{bench, checks, cri::Cri, suite};

const USAGE: &str = "usage: palisade-conformance run --cri-socket PATH --image REF [--handlers runc,palisade] \
[--work-dir DIR] [--cgroup-root PATH] [--control-socket PATH] [--containerd-address PATH] [--filter NAME]...
       palisade-conformance security --cri-socket PATH --image REF [--handlers runc,palisade,palisade-strict] \
[--work-dir DIR] [--cgroup-root PATH] [--events-dir DIR] [--gate-state-dir DIR] [--profile-state-dir DIR] [--metrics-dir DIR] [--webhook-listen ADDR] [--filter NAME]...
       palisade-conformance demo --cri-socket PATH --image REF --events-dir DIR --gate-state-dir DIR --cli PATH
       palisade-conformance bench --cri-socket PATH --image REF [--suite start|syscalls|monitor] \
[--handlers runc,palisade] [--runs N] [--rounds N] [--scale F] [--pods N] [--host-probe PATH]
       palisade-conformance detections --cri-socket PATH --image REF --corpus-image REF --events-dir DIR \
[--workload-seconds N] [--results FILE] [--filter NAME]...
       palisade-conformance cleanup --cri-socket PATH
       palisade-conformance list";

fn parse(args: &[String]) -> Result<(String, suite::Settings, bench::Options)> {
    let mut it = args.iter();
    let cmd = it.next().context(USAGE)?.clone();
    let mut s = suite::Settings {
        cri_socket: PathBuf::new(),
        image: String::new(),
        handlers: vec!["runc".into(), "palisade".into()],
        work_dir: std::env::temp_dir().join(format!("palisade-conformance-{}", std::process::id())),
        cgroup_root: "/palisade-conformance".into(),
        control_socket: None,
        containerd_address: None,
        filter: Vec::new(),
        events_dir: None,
        gate_state_dir: None,
        profile_state_dir: None,
        metrics_dir: None,
        webhook_listen: None,
        cli: None,
    };
    let mut bench = bench::Options::default();
    while let Some(flag) = it.next() {
        // Every flag takes a value (a missing one is an error only once the flag is known).
        let val = it
            .next()
            .cloned()
            .with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cri-socket" => s.cri_socket = val?.into(),
            "--image" => s.image = val?,
            "--handlers" => s.handlers = val?.split(',').map(str::to_string).collect(),
            "--work-dir" => s.work_dir = val?.into(),
            "--cgroup-root" => s.cgroup_root = val?,
            "--control-socket" => s.control_socket = Some(val?.into()),
            "--containerd-address" => s.containerd_address = Some(val?),
            "--filter" => s.filter.push(val?),
            "--events-dir" => s.events_dir = Some(val?.into()),
            "--gate-state-dir" => s.gate_state_dir = Some(val?.into()),
            "--profile-state-dir" => s.profile_state_dir = Some(val?.into()),
            "--metrics-dir" => s.metrics_dir = Some(val?.into()),
            "--cli" => s.cli = Some(val?.into()),
            "--webhook-listen" => {
                s.webhook_listen = Some(val?.parse().context("--webhook-listen")?)
            }
            f @ ("--suite" | "--runs" | "--rounds" | "--scale" | "--pods" | "--host-probe") => {
                bench.set(f, &val?)?
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok((cmd, s, bench))
}

async fn real_main() -> Result<bool> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let corpus = match args.first().map(String::as_str) {
        Some("detections") => Some(palisade_conformance::detections::Options::take(&mut args)?),
        _ => None,
    };
    let (cmd, settings, bench) = parse(&args)?;
    match cmd.as_str() {
        "list" => {
            for c in checks::all() {
                println!("{}", c.name);
            }
            for c in palisade_conformance::security::all() {
                println!("security {}", c.name);
            }
            Ok(true)
        }
        "cleanup" => {
            let cri = Cri::connect(&settings.cri_socket).await?;
            let n = cri.remove_all_pods().await?;
            eprintln!("removed {n} pod sandboxes");
            Ok(true)
        }
        "demo" => {
            palisade_conformance::demo::run(&settings).await?;
            Ok(true)
        }
        "bench" => {
            print!("{}", bench::run(&settings, &bench).await?);
            Ok(true)
        }
        "detections" => {
            let opts = corpus.context(USAGE)?;
            std::fs::create_dir_all(&settings.work_dir)
                .with_context(|| format!("create {}", settings.work_dir.display()))?;
            let (report, passed) = palisade_conformance::detections::run(&settings, &opts).await?;
            print!("{report}");
            Ok(passed)
        }
        "security" => {
            if settings.image.is_empty() {
                bail!("--image is required\n{USAGE}");
            }
            std::fs::create_dir_all(&settings.work_dir)
                .with_context(|| format!("create {}", settings.work_dir.display()))?;
            let report = palisade_conformance::security::run(
                &settings,
                &palisade_conformance::security::all(),
            )
            .await?;
            print!("{}", report.render());
            Ok(report.counts().1 == 0)
        }
        "run" => {
            if settings.image.is_empty() {
                bail!("--image is required\n{USAGE}");
            }
            std::fs::create_dir_all(&settings.work_dir)
                .with_context(|| format!("create {}", settings.work_dir.display()))?;
            let report = suite::run(&settings, &checks::all()).await?;
            print!("{}", report.render());
            Ok(report.counts().1 == 0)
        }
        other => bail!("unknown command {other}\n{USAGE}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("palisade-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}
