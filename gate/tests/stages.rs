//! Staged modes on real sockets: a service learns, is promoted to alert and then to block by
//! the promotion rule, each promotion reported as an event; an alert keeps it in alert.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{gate_to_upstream, test_config, Client, TestRequest};
use palisade_gate::{AutoAlert, EventKind, GateConfig, Mode, Promotion};

fn search(q: &str) -> TestRequest {
    TestRequest::get(&format!("/search?q={q}")).header("user-agent", "shop/1.0")
}

const WORDS: [&str; 8] = [
    "red",
    "blue+hat",
    "warm+wool",
    "shoes",
    "green+socks",
    "lamp",
    "desk",
    "mug",
];

#[tokio::test]
async fn learn_then_alert_then_block_with_events() -> Result<()> {
    let config = GateConfig {
        auto_alert: Some(AutoAlert {
            min_requests: 30,
            min_duration: Duration::ZERO,
        }),
        promotion: Promotion {
            field_values: 10,
            thin_share: 0.0,
            quiet: Some(Duration::from_millis(300)),
            quiet_requests: 5,
        },
        ..test_config(Mode::Learn)
    };
    let (_up, mut gate) = gate_to_upstream(config).await?;
    let mut c = Client::connect(gate.addr).await?;
    for i in 0..30 {
        assert_eq!(c.send(&search(WORDS[i % WORDS.len()])).await?.status, 200);
    }
    assert_eq!(gate.gate.mode(), Mode::Alert);
    // An alert in alert mode restarts the quiet window.
    assert_eq!(
        c.send(&search("x%27%20or%20%27a%27%3D%27a")).await?.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    for w in WORDS {
        assert_eq!(c.send(&search(w)).await?.status, 200);
    }
    assert_eq!(
        gate.gate.mode(),
        Mode::Alert,
        "window restarted by the alert"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(gate.gate.mode(), Mode::Block);
    let refused = c.send(&search("x%27%20or%20%27a%27%3D%27a")).await?;
    assert_eq!(refused.status, 403);
    assert_eq!(c.send(&search("desk+lamp")).await?.status, 200);
    let stages: Vec<String> = gate
        .drain_events()
        .into_iter()
        .filter(|e| e.kind == EventKind::Stage)
        .map(|e| e.reasons[0].clone())
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(
        stages[0].starts_with("stage: learn -> alert: 30 requests learned"),
        "{stages:?}"
    );
    assert!(
        stages[1].starts_with("stage: alert -> block: no alert for"),
        "{stages:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_held_service_stays_at_its_stage() -> Result<()> {
    let (_up, gate) = gate_to_upstream(test_config(Mode::Learn)).await?;
    let mut c = Client::connect(gate.addr).await?;
    for i in 0..100 {
        assert_eq!(c.send(&search(WORDS[i % WORDS.len()])).await?.status, 200);
    }
    assert_eq!(
        gate.gate.mode(),
        Mode::Learn,
        "test_config holds: no auto_alert"
    );
    gate.gate.set_mode(Mode::Alert);
    for w in WORDS {
        assert_eq!(c.send(&search(w)).await?.status, 200);
    }
    assert_eq!(gate.gate.mode(), Mode::Alert);
    Ok(())
}
