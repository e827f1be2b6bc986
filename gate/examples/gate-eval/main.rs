//! `gate-eval`: generates the evaluation corpus of two services (a JSON shop API and a form
//! based forum), learns each through the gate, then sends benign and attack traffic in block
//! mode and prints what was refused by class; with `--crs ADDR --upstream ADDR` the same test
//! traffic also goes through another proxy (ModSecurity with OWASP CRS, set up by
//! `gate/eval.sh`) for a side-by-side table.
//!
//! Usage: `gate-eval [--short] [--seed N] [--crs ADDR --upstream ADDR] [--verbose]`

mod attacks;
mod corpus;
mod eval;
mod forum;
mod generate;
mod run;
mod shop;
mod values;

use anyhow::{bail, Context, Result};

use corpus::{table_classes, Class};
use eval::Tally;
use generate::{corpus as generate_corpus, services, Sizes};

fn pct(t: &Tally, c: Class) -> String {
    let (n, r) = t.counts.get(&c).copied().unwrap_or_default();
    if n == 0 {
        return "–".into();
    }
    format!("{r}/{n} = {:.1}%", 100.0 * r as f64 / n as f64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut sizes, mut seed, mut crs, mut up, mut verbose) =
        (Sizes::FULL, 1u64, None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--short" => sizes = Sizes::SHORT,
            "--seed" => seed = it.next().context("--seed N")?.parse()?,
            "--crs" => crs = Some(it.next().context("--crs ADDR")?.parse()?),
            "--upstream" => up = Some(it.next().context("--upstream ADDR")?.parse()?),
            "--verbose" => verbose = true,
            other => bail!("unknown argument {other:?}; usage: gate-eval [--short] [--seed N] [--crs ADDR --upstream ADDR] [--verbose]"),
        }
    }
    let mut gate_all = Tally::default();
    let mut crs_all = Tally::default();
    for service in services() {
        let samples = generate_corpus(service, seed, sizes);
        let (tally, profile) = eval::through_gate(&samples)?;
        eprintln!(
            "{service}: learned {} requests, profile {} bytes",
            profile.requests_learned(),
            palisade_gate::export(&profile)?.len()
        );
        gate_all.merge(tally);
        if let (Some(proxy), Some(up)) = (crs, up) {
            crs_all.merge(eval::through_proxy(&samples, proxy, up)?);
        }
    }
    if verbose {
        for l in &gate_all.caught_fitting {
            eprintln!("refused fitting injection: {l}");
        }
        for l in gate_all.false_positives.iter().take(200) {
            eprintln!("false positive: {l}");
        }
        for l in gate_all.missed.iter().take(200) {
            eprintln!("missed: {l}");
        }
    }
    let with_crs = crs.is_some();
    println!(
        "| traffic (both services) | gate, block mode after learning |{}",
        if with_crs {
            " OWASP CRS via ModSecurity |"
        } else {
            ""
        }
    );
    println!("| --- | --- |{}", if with_crs { " --- |" } else { "" });
    for c in table_classes() {
        println!(
            "| {c} | {} |{}",
            pct(&gate_all, c),
            if with_crs {
                format!(" {} |", pct(&crs_all, c))
            } else {
                String::new()
            }
        );
    }
    let total = |t: &Tally| {
        let (n, r) = t.attack_rate();
        format!("{r}/{n} = {:.1}%", 100.0 * r as f64 / n.max(1) as f64)
    };
    println!(
        "| **all classic attacks** | **{}** |{}",
        total(&gate_all),
        if with_crs {
            format!(" **{}** |", total(&crs_all))
        } else {
            String::new()
        }
    );
    Ok(())
}
