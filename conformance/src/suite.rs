//! Runs every check once per runtime handler, cleans up after each, prints the table.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

use crate::cri::{self, Cri};

/// What the whole suite run shares: where things are and how to reach them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cri_socket: PathBuf,
    pub image: String,
    pub handlers: Vec<String>,
    /// Host directory for pod logs and bind-mount sources (one subdir per check).
    pub work_dir: PathBuf,
    /// cgroup parent under which every pod's cgroup is placed (cgroupfs path).
    pub cgroup_root: String,
    /// The harness's control socket: `restart` restarts containerd, `pid` prints its pid.
    pub control_socket: Option<PathBuf>,
    /// containerd's grpc address, to tell this run's shims apart from others.
    pub containerd_address: Option<String>,
    /// Only run checks whose name contains one of these.
    pub filter: Vec<String>,
    /// The palisade shim's violation log directory (`[events] log_dir`), for the security suite.
    pub events_dir: Option<PathBuf>,
    /// The palisade shim's learned gate profiles (`[gate] state_dir`), for the gate checks.
    pub gate_state_dir: Option<PathBuf>,
    /// The palisade shim's learned workload profiles (`[profile] state_dir`).
    pub profile_state_dir: Option<PathBuf>,
    /// The shims' Prometheus textfiles (`[events] metrics_dir`).
    pub metrics_dir: Option<PathBuf>,
    /// Where the shims POST Falco JSON (`[events] webhook_url`); the suite listens there.
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The `palisade` CLI, for the demo's `palisade events`.
    pub cli: Option<PathBuf>,
}

impl Settings {
    /// Whether `--filter` selects the check named `name` (no filter selects every check).
    pub fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }
}

pub type CheckFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// One conformance check: a name, a time limit and the async body.
pub struct Check {
    pub name: &'static str,
    pub timeout: Duration,
    pub run: for<'a> fn(&'a Ctx) -> CheckFuture<'a>,
    /// Why this containerd release (major, minor) cannot run the check at all, for any
    /// handler; such a check is listed as not run and counted neither way.
    pub unsupported: fn((u32, u32)) -> Option<&'static str>,
}

impl Check {
    /// The same check, not run on the containerd releases `unsupported` names.
    pub fn unsupported_on(self, unsupported: fn((u32, u32)) -> Option<&'static str>) -> Self {
        Check {
            unsupported,
            ..self
        }
    }
}

/// Calls `f` every 50 ms until it returns a value or `timeout` has passed (`None`); an error
/// of `f` ends the wait at once.
pub async fn poll<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Major and minor release of the containerd behind `cri`, from the CRI Version call
/// (`v1.6.20`, `1.7.24~ds1`, `2.1.9+unknown`).
pub async fn containerd_release(cri: &Cri) -> Result<(u32, u32)> {
    let v = cri
        .rt
        .clone()
        .version(k8s_cri::v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .context("cri version")?
        .into_inner();
    parse_release(&v.runtime_version)
        .with_context(|| format!("runtime version {:?}", v.runtime_version))
}

fn parse_release(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim_start_matches('v').split(['.', '~', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Builds a [`Check`] from an `async fn(&Ctx) -> Result<()>`, named after the function (with
/// `"prefix_" +` in front of it, that prefix first) unless a name is given.
#[macro_export]
macro_rules! check {
    ($m:ident :: $f:ident, $secs:expr) => {
        $crate::check!(stringify!($f), $secs, $m::$f)
    };
    ($prefix:literal + $m:ident :: $f:ident, $secs:expr) => {
        $crate::check!(concat!($prefix, stringify!($f)), $secs, $m::$f)
    };
    ($name:expr, $secs:expr, $f:path) => {
        $crate::suite::Check {
            name: $name,
            timeout: ::std::time::Duration::from_secs($secs),
            run: |ctx| Box::pin($f(ctx)),
            unsupported: |_| None,
        }
    };
}

/// Per-check context: the handler under test and a record of the pods to remove.
pub struct Ctx {
    pub cri: Cri,
    pub handler: String,
    pub settings: Settings,
    pub check: &'static str,
    /// Host scratch directory of this check (logs, mount sources).
    pub dir: PathBuf,
    pods: Mutex<Vec<String>>,
    seq: AtomicU32,
    run_tag: String,
}

impl Ctx {
    /// A context for one check under one handler; its scratch dir is created by the caller.
    pub fn new(
        cri: &Cri,
        settings: &Settings,
        handler: &str,
        check: &'static str,
        dir: PathBuf,
        run_tag: &str,
    ) -> Self {
        Self {
            cri: cri.clone(),
            handler: handler.to_string(),
            settings: settings.clone(),
            check,
            dir,
            pods: Mutex::new(Vec::new()),
            seq: AtomicU32::new(0),
            run_tag: run_tag.to_string(),
        }
    }

    pub fn image(&self) -> &str {
        &self.settings.image
    }

    /// A fresh pod config with a unique name and uid; logs go under this check's dir.
    pub fn pod_config(&self) -> PodSandboxConfig {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}", self.check.replace('_', "-"), self.handler);
        let uid = format!("{}-{}", self.run_tag, name);
        let log_dir = self.dir.join(&name);
        cri::pod_config(&name, &uid, &log_dir, &self.settings.cgroup_root)
    }

    /// Runs a pod sandbox and records it for cleanup.
    pub async fn run_pod(&self, config: &PodSandboxConfig) -> Result<String> {
        std::fs::create_dir_all(&config.log_directory)
            .with_context(|| format!("create log dir {}", config.log_directory))?;
        let id = self.cri.run_pod(config, &self.handler).await?;
        self.track(&id);
        Ok(id)
    }

    /// Runs a pod sandbox that must be refused with a message naming `annotation` and `part`
    /// (a bad value of it); the message.
    pub async fn run_pod_refused(
        &self,
        config: &PodSandboxConfig,
        annotation: &str,
        part: &str,
    ) -> Result<String> {
        let Err(e) = self.run_pod(config).await else {
            anyhow::bail!("a pod with a bad {annotation} ({part}) started");
        };
        let msg = format!("{e:#}");
        ensure(msg.contains(annotation) && msg.contains(part), || {
            format!("RunPodSandbox failed without naming {annotation}: {msg}")
        })?;
        Ok(msg)
    }

    /// Runs a default pod sandbox.
    pub async fn pod(&self) -> Result<(String, PodSandboxConfig)> {
        let cfg = self.pod_config();
        let id = self.run_pod(&cfg).await?;
        Ok((id, cfg))
    }

    /// Records a pod for cleanup (for pods created outside `run_pod`).
    pub fn track(&self, id: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.push(id.to_string());
        }
    }

    /// Forgets a pod the check removed itself.
    pub fn untrack(&self, id: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|p| p != id);
        }
    }

    pub fn container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        cri::container_config(name, 0, self.image(), command)
    }

    /// Runs a pod with one long-running container; returns (pod, container, pod config).
    pub async fn pod_with_sleeper(&self) -> Result<(String, String, PodSandboxConfig)> {
        let cfg = self.pod_config();
        let (pod, c) = self.run_sleeper_pod(&cfg, "sleeper").await?;
        Ok((pod, c, cfg))
    }

    /// Runs a pod of `cfg` with one long-running container `name`; returns (pod, container).
    pub async fn run_sleeper_pod(
        &self,
        cfg: &PodSandboxConfig,
        name: &str,
    ) -> Result<(String, String)> {
        let pod = self.run_pod(cfg).await?;
        let c = self
            .cri
            .run_container(&pod, &self.container(name, crate::cri::SLEEPER), cfg)
            .await?;
        Ok((pod, c))
    }

    /// Removes every pod recorded for this check.
    pub async fn cleanup(&self) -> Result<()> {
        let pods: Vec<String> = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        let mut errs = Vec::new();
        for id in pods.iter().rev() {
            match self.cri.remove_pod(id).await {
                // Forgotten once removed, so that a second cleanup retries only the rest.
                Ok(()) => self.untrack(id),
                Err(e) => errs.push(format!("{e:#}")),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("cleanup: {}", errs.join("; "))
        }
    }
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Pass,
    Fail(String),
}

impl Outcome {
    /// Why the check failed, when it did.
    fn failure(&self) -> Option<&str> {
        match self {
            Outcome::Fail(r) => Some(r),
            Outcome::Pass => None,
        }
    }
}

pub struct Report {
    pub handlers: Vec<String>,
    /// (check name, one outcome per handler, in `handlers` order)
    pub rows: Vec<(&'static str, Vec<Outcome>)>,
}

impl Report {
    pub fn counts(&self) -> (usize, usize) {
        let all = self.rows.iter().flat_map(|(_, o)| o.iter());
        let (mut pass, mut fail) = (0, 0);
        for o in all {
            match o {
                Outcome::Pass => pass += 1,
                Outcome::Fail(_) => fail += 1,
            }
        }
        (pass, fail)
    }

    /// The table, the failure reasons and the closing `N passed, N failed` line.
    pub fn render(&self) -> String {
        let width = name_width(&self.rows, "check");
        let mut out = format!("{:<width$}", "check");
        for h in &self.handlers {
            out += &format!("  {h:<10}");
        }
        out.push('\n');
        for (name, outcomes) in &self.rows {
            out += &format!("{name:<width$}");
            for o in outcomes {
                let s = match o {
                    Outcome::Pass => "PASS",
                    Outcome::Fail(_) => "FAIL",
                };
                out += &format!("  {s:<10}");
            }
            out.push('\n');
        }
        out += &failures_and_counts(&self.handlers, &self.rows, Outcome::failure, self.counts());
        out
    }
}

/// The width of a report's first column: its longest check name, and at least `header`.
pub fn name_width<C>(rows: &[(&str, Vec<C>)], header: &str) -> usize {
    rows.iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(header.len())
}

/// The end of a report (this suite's and the security suite's): the failure reasons, one
/// `check [handler]: reason` a line for each cell of `rows` that `failed` gives a reason for
/// (one cell per handler), and the closing `N passed, N failed` line.
pub fn failures_and_counts<C>(
    handlers: &[String],
    rows: &[(&str, Vec<C>)],
    failed: impl Fn(&C) -> Option<&str>,
    (pass, fail): (usize, usize),
) -> String {
    let failures = rows.iter().flat_map(|(name, cells)| {
        handlers
            .iter()
            .zip(cells)
            .filter_map(|(h, c)| failed(c).map(|r| (*name, h, r)))
    });
    let mut out = String::new();
    let mut reasons = String::new();
    for (name, h, r) in failures {
        reasons += &format!("  {name} [{h}]: {r}\n");
    }
    if !reasons.is_empty() {
        out += "\nfailures:\n";
        out += &reasons;
    }
    out += &format!("\n{pass} passed, {fail} failed\n");
    out
}

/// The check every other depends on: when it fails for a handler the rest are not tried.
pub const SMOKE: &str = "pod_sandbox_lifecycle";

/// Runs the checks for each handler in turn and returns the report.
pub async fn run(settings: &Settings, checks: &[Check]) -> Result<Report> {
    let run = Run::start(settings, "").await?;
    let release = containerd_release(&run.cri).await?;
    let selected: Vec<&Check> = checks
        .iter()
        .filter(|c| settings.selects(c.name))
        .filter(|c| match (c.unsupported)(release) {
            Some(why) => {
                eprintln!(
                    "{}: not run on containerd {}.{}: {why}",
                    c.name, release.0, release.1
                );
                false
            }
            None => true,
        })
        .collect();
    let mut rows: Vec<(&'static str, Vec<Outcome>)> =
        selected.iter().map(|c| (c.name, Vec::new())).collect();
    for handler in &settings.handlers {
        let mut smoke_failed: Option<String> = None;
        for (i, check) in selected.iter().enumerate() {
            let outcome = if let Some(reason) = &smoke_failed {
                Outcome::Fail(format!("not run: {SMOKE} failed: {reason}"))
            } else {
                run_one(&run, handler, check).await
            };
            if check.name == SMOKE {
                if let Outcome::Fail(r) = &outcome {
                    smoke_failed = Some(r.clone());
                }
            }
            rows[i].1.push(outcome);
        }
    }
    Ok(Report {
        handlers: settings.handlers.clone(),
        rows,
    })
}

async fn run_one(run: &Run<'_>, handler: &str, check: &Check) -> Outcome {
    let dir_name = format!("{}-{handler}", check.name);
    let ran = run
        .check(handler, check.name, dir_name, check.timeout, check.run)
        .await;
    let outcome = match (ran.result, ran.cleanup) {
        (Ok(()), Ok(())) => Outcome::Pass,
        (Err(e), _) | (Ok(()), Err(e)) => Outcome::Fail(reason(&e)),
    };
    let tag = match &outcome {
        Outcome::Pass => "PASS".to_string(),
        Outcome::Fail(r) => format!("FAIL: {r}"),
    };
    finish(handler, check.name, ran.started, &tag, &ran.dir);
    outcome
}

/// Says how one check went under `handler` (`tag`, after the time it took) and removes its
/// work directory.
pub fn finish(handler: &str, check: &str, started: Instant, tag: &str, dir: &Path) {
    eprintln!(
        "[{handler}] {check} ({:.1}s) {tag}",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What every check of one run of a suite shares: the CRI client, the settings, and a tag
/// unique to the run (a prefix, the process id and the clock) that tells its pods apart from
/// an earlier run's.
pub struct Run<'a> {
    pub cri: Cri,
    pub settings: &'a Settings,
    pub tag: String,
}

impl<'a> Run<'a> {
    /// Connects to CRI; `prefix` starts the run's tag.
    pub async fn start(settings: &'a Settings, prefix: &str) -> Result<Self> {
        let cri = Cri::connect(&settings.cri_socket).await?;
        Ok(Run {
            cri,
            settings,
            tag: run_tag(prefix),
        })
    }

    /// The context of `check` under `handler`, its scratch dir `dir` (created by the caller).
    pub fn ctx(&self, handler: &str, check: &'static str, dir: PathBuf) -> Ctx {
        Ctx::new(&self.cri, self.settings, handler, check, dir, &self.tag)
    }

    /// Runs check `name`'s `body` under `handler` within `timeout`, in the work directory
    /// `dir_name` of its own, and then cleans up what it left behind.
    pub async fn check<T>(
        &self,
        handler: &str,
        name: &'static str,
        dir_name: String,
        timeout: Duration,
        body: for<'c> fn(&'c Ctx) -> CheckFuture<'c, T>,
    ) -> Ran<T> {
        let dir = self.settings.work_dir.join(dir_name);
        let ctx = self.ctx(handler, name, dir.clone());
        let started = Instant::now();
        let result = run_body(&dir, timeout, body(&ctx)).await;
        let cleanup = cleanup_within(&ctx).await;
        Ran {
            ctx,
            dir,
            started,
            result,
            cleanup,
        }
    }
}

/// How one check ran ([`Run::check`]).
pub struct Ran<T> {
    /// Its context, for a second cleanup.
    pub ctx: Ctx,
    /// Its work directory.
    pub dir: PathBuf,
    pub started: Instant,
    /// What its body returned.
    pub result: Result<T>,
    /// Whether what it left behind was removed.
    pub cleanup: Result<()>,
}

fn run_tag(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or(0)
    )
}

/// Runs one check's `body` in its work directory `dir` (created first), within `timeout`.
pub async fn run_body<T>(
    dir: &Path,
    timeout: Duration,
    body: impl Future<Output = Result<T>>,
) -> Result<T> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("create check dir {}: {e}", dir.display()))?;
    match tokio::time::timeout(timeout, body).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("timed out after {timeout:?}")),
    }
}

/// Removes what one check left behind ([`Ctx::cleanup`]), within 90 s.
pub async fn cleanup_within(ctx: &Ctx) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(90), ctx.cleanup()).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("cleanup timed out")),
    }
}

/// An error as the report shows it: its whole chain on one line.
pub fn reason(e: &anyhow::Error) -> String {
    one_line(&format!("{e:#}"))
}

pub fn one_line(s: &str) -> String {
    let s = s.replace('\n', "\\n");
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// Fails with `what` when `cond` is false.
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(anyhow::anyhow!(what()))
    }
}

/// Runs `cmd` to its end and returns its standard output; fails naming `what`, with the exit
/// status and standard error, when it cannot run or exits unsuccessfully.
pub fn stdout_of(cmd: &mut std::process::Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    ensure(out.status.success(), || {
        format!(
            "{what} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_release_from_the_cri_version_strings() {
        assert_eq!(parse_release("v1.6.20"), Some((1, 6)));
        assert_eq!(parse_release("1.7.24~ds1"), Some((1, 7)));
        assert_eq!(parse_release("2.1.9+unknown"), Some((2, 1)));
        assert_eq!(parse_release("2"), None);
        assert_eq!(parse_release("containerd"), None);
    }

    #[test]
    fn report_counts_and_closing_line() {
        let r = Report {
            handlers: vec!["runc".into(), "palisade".into()],
            rows: vec![
                ("a", vec![Outcome::Pass, Outcome::Fail("boom".into())]),
                ("b", vec![Outcome::Pass, Outcome::Pass]),
            ],
        };
        assert_eq!(r.counts(), (3, 1));
        let text = r.render();
        assert!(text.ends_with("\n3 passed, 1 failed\n"), "{text}");
        assert!(text.contains("a [palisade]: boom"), "{text}");
    }

    #[test]
    fn one_line_flattens_and_truncates() {
        assert_eq!(one_line("a\nb"), "a\\nb");
        assert!(one_line(&"x".repeat(700)).ends_with("..."));
    }
}
