//! What each set of handled landlock rights costs an open/close loop, outside containers.
//!
//! ```text
//! cargo run --release -p palisade-init --example landlock_cost -- \
//!     [--file /etc/hostname] [--writable DIR] [--iterations 200000] [--rounds 5]
//! ```
//!
//! Each ruleset runs in a child process of its own (a landlock domain cannot be left): the
//! child enforces it through [`palisade_init::landlock`], opens and closes `--file`
//! `iterations / 20` times unmeasured, then `iterations` times, and prints its CPU time
//! (user + system, `getrusage`) per open. Every round runs every ruleset once, starting one
//! further along each round; the table gives the median over the rounds and the difference
//! to the run without a domain. Write rights are granted beneath `--writable` (a fresh
//! temporary directory by default), read and execute rights beneath `/`, so every open
//! succeeds and only the cost of checking is measured. Needs a kernel with landlock.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use palisade_init::landlock;
use palisade_init::plan::{FsAccess as A, FsRule, LandlockPlan, LogPlan, ScopePlan};

/// Everything that changes the filesystem except `refer` and `truncate`.
const WRITE_BASE: [A; 10] = [
    A::WriteFile,
    A::RemoveDir,
    A::RemoveFile,
    A::MakeChar,
    A::MakeDir,
    A::MakeReg,
    A::MakeSock,
    A::MakeFifo,
    A::MakeBlock,
    A::MakeSym,
];

/// The rulesets compared: a name and the handled rights (granted where they apply).
fn rulesets() -> Vec<(&'static str, Vec<A>)> {
    let with = |extra: &[A]| WRITE_BASE.iter().chain(extra).copied().collect::<Vec<_>>();
    vec![
        ("none", Vec::new()),
        ("execute", vec![A::Execute]),
        ("ioctl_dev", vec![A::IoctlDev]),
        ("write", with(&[])),
        ("write+refer", with(&[A::Refer])),
        ("write+truncate", with(&[A::Truncate])),
        ("write+refer+truncate", with(&[A::Refer, A::Truncate])),
        ("read", vec![A::ReadFile, A::ReadDir]),
        ("everything", A::ALL.to_vec()),
    ]
}

fn is_write(right: A) -> bool {
    !matches!(right, A::Execute | A::ReadFile | A::ReadDir | A::IoctlDev)
}

/// Enforces `handled` (write rights beneath `writable`, the others beneath `/`), then loops.
fn child(name: &str, file: &Path, writable: &Path, iterations: u64) -> Result<f64> {
    let handled = rulesets()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| h)
        .with_context(|| format!("ruleset {name}: unknown"))?;
    if !handled.is_empty() {
        let (write, other): (Vec<A>, Vec<A>) = handled.iter().partition(|r| is_write(**r));
        let plan = LandlockPlan {
            required_abi: 1,
            best_effort: false,
            handled_fs: Some(handled.clone()),
            fs: [(writable, write), (Path::new("/"), other)]
                .into_iter()
                .filter(|(_, access)| !access.is_empty())
                .map(|(path, access)| FsRule {
                    path: path.to_owned(),
                    access,
                    optional: false,
                })
                .collect(),
            net: None,
            scope: ScopePlan::default(),
            log: LogPlan::default(),
        };
        let ruleset = landlock::compile(&plan, landlock::abi())
            .with_context(|| format!("ruleset {name}: compile"))?;
        palisade_init::nnp::set().context("no_new_privs")?;
        landlock::enforce(&ruleset).with_context(|| format!("ruleset {name}: enforce"))?;
    }
    for _ in 0..iterations / 20 {
        drop(std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?);
    }
    let start = cpu_ns()?;
    for _ in 0..iterations {
        drop(std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?);
    }
    Ok((cpu_ns()? - start) as f64 / iterations as f64)
}

/// User + system CPU time of this process, in ns.
fn cpu_ns() -> Result<u64> {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is writable and lives for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    Ok(ns(ru.ru_utime) + ns(ru.ru_stime))
}

struct Opts {
    file: PathBuf,
    writable: Option<PathBuf>,
    iterations: u64,
    rounds: usize,
    child: Option<String>,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        file: "/etc/hostname".into(),
        writable: None,
        iterations: 200_000,
        rounds: 5,
        child: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag}: missing value"))
        };
        match flag.as_str() {
            "--file" => o.file = value()?.into(),
            "--writable" => o.writable = Some(value()?.into()),
            "--iterations" => o.iterations = value()?.parse().context("--iterations")?,
            "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
            "--child" => o.child = Some(value()?),
            _ => bail!("unknown argument {flag}"),
        }
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = parse()?;
    if let Some(name) = &o.child {
        let writable = o.writable.as_deref().context("--child needs --writable")?;
        println!("{}", child(name, &o.file, writable, o.iterations)?);
        return Ok(());
    }
    if landlock::abi() == 0 {
        bail!("landlock: not available on this kernel");
    }
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let writable = o.writable.clone().unwrap_or_else(|| tmp.path().to_owned());
    let exe = std::env::current_exe().context("own executable")?;
    let sets = rulesets();
    let mut samples = vec![Vec::new(); sets.len()];
    for round in 0..o.rounds {
        for k in 0..sets.len() {
            let i = (round + k) % sets.len();
            let out = Command::new(&exe)
                .args(["--child", sets[i].0, "--file"])
                .arg(&o.file)
                .arg("--writable")
                .arg(&writable)
                .args(["--iterations", &o.iterations.to_string()])
                .output()
                .context("run a child")?;
            if !out.status.success() {
                bail!(
                    "ruleset {}: {}",
                    sets[i].0,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let ns: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .with_context(|| format!("ruleset {}: output", sets[i].0))?;
            samples[i].push(ns);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = samples.iter_mut().map(median).collect();
    println!(
        "landlock abi {}, {} opens of {} per run, {} rounds; CPU ns per open/close, median",
        landlock::abi(),
        o.iterations,
        o.file.display(),
        o.rounds
    );
    println!("| handled rights | mask | ns per open | vs none |");
    println!("|---|---|---|---|");
    for ((name, handled), ns) in sets.iter().zip(&medians) {
        let mask = handled.iter().fold(0u64, |m, r| m | landlock::bit(*r));
        println!(
            "| {name} | {mask:#06x} | {ns:.0} | {:+.0} |",
            ns - medians[0]
        );
    }
    Ok(())
}
