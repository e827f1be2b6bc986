//! Detection and false-positive rates: learn on generated benign shop traffic through a real
//! gate, then send attacks and fresh benign traffic in alert and in block mode.
//!
//! `cargo test -p palisade-gate --test detection -- --nocapture` prints the rates.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::{
    attacks, benign, start_gate, start_upstream, test_config, Client, Rng, TestGate, Upstream,
};
use palisade_gate::{decide, EventKind, Mode, Profile};

/// Benign requests learned before deciding.
const LEARN: usize = 1500;
/// Fresh benign requests checked for false positives.
const FRESH: usize = 1000;

async fn learned_gate() -> Result<(Upstream, TestGate)> {
    let upstream = start_upstream().await?;
    let mut gate = start_gate(test_config(Mode::Learn), Profile::default(), upstream.addr).await?;
    let mut rng = Rng::new(1);
    let mut client = Client::connect(gate.addr).await?;
    for _ in 0..LEARN {
        let resp = client.send(&benign(&mut rng, false)).await?;
        ensure!(
            resp.status == 200,
            "learning request answered {}",
            resp.status
        );
    }
    ensure!(
        upstream.hits() == LEARN,
        "every learning request reached the upstream"
    );
    ensure!(gate.drain_events().is_empty(), "learn mode reports nothing");
    Ok((upstream, gate))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_mode_reports_attacks_forwards_all_and_spares_benign() -> Result<()> {
    let (upstream, mut gate) = learned_gate().await?;
    gate.gate.set_mode(Mode::Alert);
    let mut client = Client::connect(gate.addr).await?;

    let mut per_family: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let corpus = attacks();
    let mut missed = Vec::new();
    for (family, attack) in &corpus {
        let before = upstream.hits();
        let resp = client.send(attack).await?;
        assert_eq!(resp.status, 200, "{family} forwarded in alert mode");
        assert_eq!(upstream.hits(), before + 1, "{family} reached the upstream");
        let alerts: Vec<_> = gate
            .drain_events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Alert)
            .collect();
        let entry = per_family.entry(family).or_default();
        entry.1 += 1;
        if let Some(e) = alerts.first() {
            entry.0 += 1;
            assert!(!e.reasons.is_empty() && !e.request_id.is_empty());
            assert_eq!(e.method, attack.method);
        } else {
            missed.push(format!("{family}: {}", attack.target));
        }
    }

    let mut rng = Rng::new(2);
    let mut false_positives = Vec::new();
    for _ in 0..FRESH {
        let req = benign(&mut rng, true);
        let resp = client.send(&req).await?;
        assert_eq!(resp.status, 200);
        let events = gate.drain_events();
        if let Some(e) = events.iter().find(|e| e.kind == EventKind::Alert) {
            false_positives.push(format!("{} {}: {:?}", req.method, req.target, e.reasons));
        }
    }

    let detected: usize = per_family.values().map(|(d, _)| d).sum();
    println!("learned on {LEARN} benign requests");
    for (family, (d, n)) in &per_family {
        println!("  {family:<14} detected {d}/{n}");
    }
    println!(
        "detection rate: {detected}/{} = {:.1}%",
        corpus.len(),
        100.0 * detected as f64 / corpus.len() as f64
    );
    println!(
        "false-positive rate: {}/{FRESH} = {:.2}%",
        false_positives.len(),
        100.0 * false_positives.len() as f64 / FRESH as f64
    );
    for m in &missed {
        println!("  missed {m}");
    }
    for fp in false_positives.iter().take(10) {
        println!("  false positive {fp}");
    }
    assert!(missed.is_empty(), "attacks not detected: {missed:#?}");
    assert!(
        false_positives.len() * 100 <= FRESH,
        "more than 1% false positives: {false_positives:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_refuses_attacks_with_a_request_id() -> Result<()> {
    let (upstream, mut gate) = learned_gate().await?;
    gate.gate.set_mode(Mode::Block);
    let mut client = Client::connect(gate.addr).await?;
    for (family, attack) in attacks() {
        let before = upstream.hits();
        let resp = client.send(&attack).await?;
        assert_eq!(resp.status, 403, "{family} {} refused", attack.target);
        assert_eq!(
            upstream.hits(),
            before,
            "{family} never reached the upstream"
        );
        let id = resp
            .header("x-request-id")
            .expect("request id header")
            .to_string();
        let body = String::from_utf8_lossy(&resp.body);
        assert!(body.contains(&id), "403 body names the request id: {body}");
        let events = gate.drain_events();
        assert!(
            events
                .iter()
                .any(|e| e.kind == EventKind::Block && e.request_id == id),
            "{family}: block event with id {id}: {events:?}"
        );
        // A refused request whose body was never read may end the connection.
        client = Client::connect(gate.addr).await?;
    }
    let mut rng = Rng::new(3);
    let mut refused = 0;
    for _ in 0..200 {
        let before = upstream.hits();
        let resp = client.send(&benign(&mut rng, true)).await?;
        if resp.status == 403 {
            refused += 1;
            client = Client::connect(gate.addr).await?;
            continue;
        }
        assert_eq!(resp.status, 200);
        assert_eq!(upstream.hits(), before + 1);
    }
    assert!(refused <= 2, "{refused} of 200 benign requests refused");
    Ok(())
}

/// Rates against the number of requests learned, with the pure decision function on the same
/// corpus as the proxy tests.
#[test]
fn rates_by_learning_size() {
    let attacks = attacks();
    let mut fresh_rng = Rng::new(2);
    let fresh: Vec<_> = (0..FRESH)
        .map(|_| benign(&mut fresh_rng, true).to_sample())
        .collect();
    let mut rng = Rng::new(1);
    let mut profile = Profile::default();
    let mut learned = 0;
    let mut rates = Vec::new();
    println!("learned  detection  false-positives  profile-bytes");
    for target in [50, 100, 200, 500, 1000, LEARN] {
        while learned < target {
            profile.learn(&benign(&mut rng, false).to_sample());
            learned += 1;
        }
        let detected = attacks
            .iter()
            .filter(|(_, a)| !decide(&profile, &a.to_sample()).is_clean())
            .count();
        let fps = fresh
            .iter()
            .filter(|r| !decide(&profile, r).is_clean())
            .count();
        let bytes = palisade_gate::export(&profile).unwrap().len();
        println!(
            "{learned:>7}  {:>8.1}%  {:>14.2}%  {bytes:>13}",
            100.0 * detected as f64 / attacks.len() as f64,
            100.0 * fps as f64 / FRESH as f64
        );
        rates.push((detected, fps));
    }
    // Cost of the decision itself, on the learned profile (build with --release to measure).
    let started = std::time::Instant::now();
    let mut broken = 0;
    for _ in 0..5 {
        broken += fresh
            .iter()
            .filter(|r| !decide(&profile, r).is_clean())
            .count();
    }
    let per = started.elapsed() / (5 * fresh.len() as u32);
    println!(
        "decide: {per:?} per request ({broken} broken of {})",
        5 * fresh.len()
    );
    let (first, last) = (rates[0], rates[rates.len() - 1]);
    assert_eq!(
        last.0,
        attacks.len(),
        "all attacks detected after full learning"
    );
    assert!(
        last.1 <= first.1,
        "false positives do not grow with learning: {rates:?}"
    );
    assert!(
        last.1 * 100 <= FRESH,
        "at most 1% false positives: {rates:?}"
    );
}
