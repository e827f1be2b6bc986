//! The security suite: attacks, KubeArmor policies and strict mode through CRI, each graded per handler.
//!
//! A check's body runs once per handler it concerns and reports what it saw ([`Observed`]).
//! Under `runc` an attack's outcome is recorded for comparison only; under a palisade handler
//! the check passes only when the attempt was blocked (or, for policy and strict checks, when
//! every assertion held). Checks that only make sense under one handler show `n/a` elsewhere.

pub mod attacks;
pub mod bad_input;
pub mod compromise;
pub mod eventlog;
pub mod gate;
pub mod lsm;
pub mod monitor;
pub mod policies;
pub mod precision;
pub mod profile;
pub mod profile_canary;
pub mod profile_enforce;
pub mod profile_exports;
mod profile_hole;
pub mod recall;
pub mod sinks;
pub mod status;
pub mod strict;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, Result};

pub use crate::cri::security;
use crate::suite::{cleanup_within, finish, reason, Ctx, Run, Settings};

/// The handler every comparison is made against.
pub const RUNC: &str = "runc";
pub const PALISADE: &str = "palisade";
pub const STRICT: &str = "palisade-strict";
/// Policies and compromise decisions reported, not enforced (`mode = "audit"`).
pub const AUDIT: &str = "palisade-audit";

/// What a body saw: whether the attempt was refused, and how.
#[derive(Clone, Debug)]
pub struct Observed {
    pub blocked: bool,
    pub detail: String,
}

impl Observed {
    pub fn blocked(detail: impl Into<String>) -> Self {
        Self {
            blocked: true,
            detail: detail.into(),
        }
    }

    pub fn allowed(detail: impl Into<String>) -> Self {
        Self {
            blocked: false,
            detail: detail.into(),
        }
    }
}

/// Which handlers a check runs under and how each is graded.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    /// `runc` for comparison; every other handler passes only when the attempt is blocked.
    Attack,
    /// `runc` for comparison; only this handler is graded (the others show n/a).
    CompareWith(&'static str),
    /// Only this handler (policy annotations mean nothing to runc); the others show n/a.
    Only(&'static str),
}

pub type SecFuture<'a> = Pin<Box<dyn Future<Output = Result<Observed>> + 'a>>;

/// One security check.
pub struct SecCheck {
    pub name: &'static str,
    pub timeout: Duration,
    pub scope: Scope,
    pub run: for<'a> fn(&'a Ctx) -> SecFuture<'a>,
}

/// Builds a [`SecCheck`] from an `async fn(&Ctx) -> Result<Observed>`, named by a literal or
/// after the function (`f`, or `"prefix_" + f`), or from one attempt in a fresh default
/// sleeper: `shell: "script"` runs a shell snippet, `probe: ["arg", ...]` the probe with
/// those arguments.
#[macro_export]
macro_rules! sec_check {
    ($f:ident, $secs:expr, $scope:expr) => {
        $crate::sec_check!(stringify!($f), $secs, $scope, $f)
    };
    ($prefix:literal + $f:ident, $secs:expr, $scope:expr) => {
        $crate::sec_check!(concat!($prefix, stringify!($f)), $secs, $scope, $f)
    };
    ($name:literal, $secs:expr, $scope:expr, shell: $script:literal) => {
        $crate::sec_check!(@run $name, $secs, $scope, |ctx| Box::pin(
            $crate::security::attacks::shell_op(ctx, $script)
        ))
    };
    ($name:literal, $secs:expr, $scope:expr, probe: [$($arg:literal),+]) => {
        $crate::sec_check!(@run $name, $secs, $scope, |ctx| Box::pin(
            $crate::security::attacks::probe_op(ctx, &[$($arg),+])
        ))
    };
    ($name:expr, $secs:expr, $scope:expr, $f:path) => {
        $crate::sec_check!(@run $name, $secs, $scope, |ctx| Box::pin($f(ctx)))
    };
    (@run $name:expr, $secs:expr, $scope:expr, $run:expr) => {
        $crate::security::SecCheck {
            name: $name,
            timeout: ::std::time::Duration::from_secs($secs),
            scope: $scope,
            run: $run,
        }
    };
}

/// Every security check, in run order.
pub fn all() -> Vec<SecCheck> {
    let modules: [fn() -> Vec<SecCheck>; 13] = [
        attacks::all,
        policies::all,
        lsm::all,
        status::all,
        strict::all,
        bad_input::all,
        gate::all,
        profile::all,
        monitor::all,
        precision::all,
        recall::all,
        compromise::all,
        sinks::all,
    ];
    modules.iter().flat_map(|all| all()).collect()
}

/// One cell of the table.
#[derive(Clone, Debug)]
pub enum Cell {
    Pass(String),
    Fail(String),
    /// Recorded for comparison, not graded (runc).
    Info(String),
    NotApplicable,
}

impl Cell {
    /// Why the check failed, when it did.
    fn failure(&self) -> Option<&str> {
        match self {
            Cell::Fail(r) => Some(r),
            _ => None,
        }
    }
}

pub struct Report {
    pub handlers: Vec<String>,
    pub rows: Vec<(&'static str, Vec<Cell>)>,
}

impl Report {
    pub fn counts(&self) -> (usize, usize) {
        let (mut pass, mut fail) = (0, 0);
        for c in self.rows.iter().flat_map(|(_, c)| c.iter()) {
            match c {
                Cell::Pass(_) => pass += 1,
                Cell::Fail(_) => fail += 1,
                Cell::Info(_) | Cell::NotApplicable => {}
            }
        }
        (pass, fail)
    }

    /// The table (check, then one column per handler), failures, and the closing counts line.
    pub fn render(&self) -> String {
        let text = |c: &Cell| match c {
            Cell::Pass(d) => format!("PASS {d}"),
            Cell::Fail(_) => "FAIL".to_string(),
            Cell::Info(d) => d.clone(),
            Cell::NotApplicable => "n/a".to_string(),
        };
        let name_w = crate::suite::name_width(&self.rows, "security check");
        let widths: Vec<usize> = (0..self.handlers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|(_, cells)| cells.get(i).map(|c| text(c).len()))
                    .max()
                    .unwrap_or(0)
                    .max(self.handlers[i].len())
            })
            .collect();
        let mut out = format!("{:<name_w$}", "security check");
        for (h, w) in self.handlers.iter().zip(&widths) {
            out += &format!("  {h:<w$}");
        }
        out = out.trim_end().to_string();
        out.push('\n');
        for (name, cells) in &self.rows {
            let mut line = format!("{name:<name_w$}");
            for (c, w) in cells.iter().zip(&widths) {
                line += &format!("  {:<w$}", text(c));
            }
            out += line.trim_end();
            out.push('\n');
        }
        out += &crate::suite::failures_and_counts(
            &self.handlers,
            &self.rows,
            Cell::failure,
            self.counts(),
        );
        out
    }
}

/// How `check` is graded under `handler`: `None` when it does not run there.
fn role(scope: Scope, handler: &str) -> Option<bool> {
    match scope {
        // The audit handler keeps the default hardening; its own check shows that.
        Scope::Attack => (handler != AUDIT).then_some(handler != RUNC),
        Scope::CompareWith(h) => (handler == RUNC || handler == h).then_some(handler == h),
        Scope::Only(h) => (handler == h).then_some(true),
    }
}

/// Runs every selected check under each handler and returns the report.
pub async fn run(settings: &Settings, checks: &[SecCheck]) -> Result<Report> {
    let run = Run::start(settings, "s").await?;
    let mut rows = Vec::new();
    for check in checks.iter().filter(|c| settings.selects(c.name)) {
        let mut cells = Vec::new();
        for handler in &settings.handlers {
            let cell = match role(check.scope, handler) {
                None => Cell::NotApplicable,
                Some(graded) => run_one(&run, handler, check, graded).await,
            };
            cells.push(cell);
        }
        rows.push((check.name, cells));
    }
    Ok(Report {
        handlers: settings.handlers.clone(),
        rows,
    })
}

async fn run_one(run: &Run<'_>, handler: &str, check: &SecCheck, graded: bool) -> Cell {
    let dir_name = format!("sec-{}-{handler}", check.name);
    let ran = run
        .check(handler, check.name, dir_name, check.timeout, check.run)
        .await;
    let mut cleanup = ran.cleanup;
    if let Err(e) = &cleanup {
        // A shim that went away during StopPodSandbox leaves containerd to clean up after it;
        // a second removal then succeeds. Say so, and fail only if the pods stay.
        eprintln!(
            "[{handler}] security {}: cleanup retried after: {}",
            check.name,
            reason(e)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        cleanup = cleanup_within(&ran.ctx).await;
    }
    let cell = match (ran.result, cleanup, graded) {
        (Err(e), _, _) | (Ok(_), Err(e), _) => Cell::Fail(reason(&e)),
        (Ok(o), Ok(()), false) => Cell::Info(kind(&o)),
        (Ok(o), Ok(()), true) if o.blocked => Cell::Pass(o.detail),
        (Ok(o), Ok(()), true) => Cell::Fail(format!("not blocked: {}", o.detail)),
    };
    let tag = match &cell {
        Cell::Pass(d) => format!("PASS {d}"),
        Cell::Fail(r) => format!("FAIL: {r}"),
        Cell::Info(d) => format!("(not graded) {d}"),
        Cell::NotApplicable => "n/a".into(),
    };
    let what = format!("security {}", check.name);
    finish(handler, &what, ran.started, &tag, &ran.dir);
    cell
}

fn kind(o: &Observed) -> String {
    if o.blocked {
        format!("blocked {}", o.detail)
    } else {
        format!("allowed {}", o.detail)
    }
}

/// The shim's violation log (`events.jsonl` in the configuration's `[events] log_dir`).
pub fn events_log(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx
        .settings
        .events_dir
        .as_ref()
        .context("no --events-dir: the violation log's location is unknown")?;
    Ok(dir.join("events.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_na_are_not_counted() {
        let r = Report {
            handlers: vec!["runc".into(), "palisade".into()],
            rows: vec![
                (
                    "a",
                    vec![Cell::Info("allowed".into()), Cell::Pass("(EPERM)".into())],
                ),
                ("b", vec![Cell::NotApplicable, Cell::Fail("boom".into())]),
            ],
        };
        assert_eq!(r.counts(), (1, 1));
        let text = r.render();
        assert!(text.ends_with("\n1 passed, 1 failed\n"), "{text}");
        assert!(text.contains("b [palisade]: boom"), "{text}");
        assert!(text.contains("PASS (EPERM)"), "{text}");
    }

    #[test]
    fn roles_per_scope() {
        assert_eq!(role(Scope::Attack, RUNC), Some(false));
        assert_eq!(role(Scope::Attack, STRICT), Some(true));
        assert_eq!(role(Scope::Attack, AUDIT), None);
        assert_eq!(role(Scope::CompareWith(STRICT), PALISADE), None);
        assert_eq!(role(Scope::CompareWith(STRICT), RUNC), Some(false));
        assert_eq!(role(Scope::Only(PALISADE), RUNC), None);
        assert_eq!(role(Scope::Only(PALISADE), PALISADE), Some(true));
    }
}
