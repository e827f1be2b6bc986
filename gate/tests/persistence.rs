//! Profiles learned by the gates of two pods, merged, saved in a state directory and loaded
//! into a third gate, which then alerts on attacks and passes what either pod learned.

mod common;

use anyhow::Result;
use common::{attacks, benign, start_gate, start_upstream, test_config, Client, Rng, TestRequest};
use palisade_gate::{EventKind, Mode, Profile};

async fn learn_through_gate(seed: u64, only: fn(&TestRequest) -> bool) -> Result<Profile> {
    let upstream = start_upstream().await?;
    let gate = start_gate(test_config(Mode::Learn), Profile::default(), upstream.addr).await?;
    let mut client = Client::connect(gate.addr).await?;
    let mut rng = Rng::new(seed);
    let mut sent = 0;
    while sent < 600 {
        let req = benign(&mut rng, false);
        if only(&req) {
            assert_eq!(client.send(&req).await?.status, 200);
            sent += 1;
        }
    }
    Ok(gate.gate.profile().snapshot())
}

fn is_get(r: &TestRequest) -> bool {
    r.method == "GET"
}

fn is_post(r: &TestRequest) -> bool {
    r.method == "POST"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_profile_survives_a_restart_and_covers_both_pods() -> Result<()> {
    // Pod A only ever saw GETs, pod B only POSTs.
    let a = learn_through_gate(11, is_get).await?;
    let b = learn_through_gate(12, is_post).await?;
    let mut merged = a.clone();
    merged.merge(&b);
    assert_eq!(merged.requests_learned(), 1200);

    let dir = tempfile::tempdir()?;
    let path = palisade_gate::path_in(dir.path(), "shop_frontend")?;
    palisade_gate::save(&merged, &path)?;
    let loaded = palisade_gate::load(&path)?.expect("profile saved");
    assert_eq!(loaded, merged);

    let upstream = start_upstream().await?;
    let mut gate = start_gate(test_config(Mode::Alert), loaded, upstream.addr).await?;
    let mut client = Client::connect(gate.addr).await?;
    let mut rng = Rng::new(13);
    for _ in 0..300 {
        let req = benign(&mut rng, true);
        assert_eq!(client.send(&req).await?.status, 200);
        let alerts: Vec<_> = gate
            .drain_events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Alert)
            .collect();
        assert!(
            alerts.is_empty(),
            "{} {}: {alerts:?}",
            req.method,
            req.target
        );
    }
    for (family, attack) in attacks() {
        assert_eq!(client.send(&attack).await?.status, 200);
        let alerts = gate.drain_events();
        assert!(
            alerts.iter().any(|e| e.kind == EventKind::Alert),
            "{family} {} alerted after restart",
            attack.target
        );
    }

    // Either pod alone would have flagged the other pod's traffic.
    let mut rng = Rng::new(14);
    let post = std::iter::from_fn(|| Some(benign(&mut rng, false)))
        .find(is_post)
        .expect("generator yields posts");
    assert!(!palisade_gate::decide(&a, &post.to_sample()).is_clean());
    assert!(palisade_gate::decide(&merged, &post.to_sample()).is_clean());
    Ok(())
}
