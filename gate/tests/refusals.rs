//! The gate's own refusals on real loopback sockets: a refused request with a body leaves a
//! kept-alive connection usable (or closes it saying so), and requests the HTTP parser
//! refuses are reported as events with what was sent.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{start_gate, start_upstream, test_config, Client, TestRequest};
use palisade_gate::{EventKind, GateConfig, Mode, Profile};
use tokio::io::AsyncWriteExt;

fn order(body: &str) -> TestRequest {
    TestRequest::post("/echo", "application/json", body.as_bytes()).header("user-agent", "shop/1.0")
}

/// A gate that learned JSON orders through the proxy, then blocks.
async fn blocking_gate(
    config: GateConfig,
    upstream: std::net::SocketAddr,
) -> Result<common::TestGate> {
    let gate = start_gate(config, Profile::default(), upstream).await?;
    let mut c = Client::connect(gate.addr).await?;
    for i in 0..40 {
        let body = format!("{{\"item\":{},\"qty\":{}}}", 100 + i, 1 + i % 5);
        assert_eq!(c.send(&order(&body)).await?.status, 200);
    }
    gate.gate.set_mode(Mode::Block);
    Ok(gate)
}

#[tokio::test]
async fn refused_post_keeps_the_connection_usable() -> Result<()> {
    let up = start_upstream().await?;
    let mut gate = blocking_gate(test_config(Mode::Learn), up.addr).await?;
    let mut c = Client::connect(gate.addr).await?;
    assert_eq!(
        c.send(&order("{\"item\":121,\"qty\":2}")).await?.status,
        200
    );
    // Inspected body, refused: the next request on the same connection is answered.
    let refused = c.send(&order("{\"item\":\"7 OR 1=1\",\"qty\":2}")).await?;
    assert_eq!(refused.status, 403);
    assert_ne!(refused.header("connection"), Some("close"));
    let next = c.send(&order("{\"item\":118,\"qty\":1}")).await?;
    assert_eq!(
        next.status, 200,
        "next request on the kept-alive connection"
    );
    // A body that is not inspected (unknown content type), refused for its type: drained.
    let other = TestRequest::post("/echo", "application/x-unknown", b"abc=1&def=2")
        .header("user-agent", "shop/1.0");
    assert_eq!(c.send(&other).await?.status, 403);
    assert_eq!(
        c.send(&order("{\"item\":119,\"qty\":3}")).await?.status,
        200
    );
    assert_eq!(up.hits(), 43);
    assert!(gate
        .drain_events()
        .iter()
        .any(|e| e.kind == EventKind::Block));
    Ok(())
}

#[tokio::test]
async fn refused_post_with_a_body_too_large_to_drain_closes_with_the_header() -> Result<()> {
    let up = start_upstream().await?;
    let config = GateConfig {
        max_inspected_body: 64,
        body_read_timeout: Duration::from_secs(2),
        ..test_config(Mode::Learn)
    };
    let gate = blocking_gate(config, up.addr).await?;
    let mut c = Client::connect(gate.addr).await?;
    // Announces a large body and sends only part of it: the gate cannot drain it.
    let head = "POST /echo HTTP/1.1\r\nhost: t\r\nuser-agent: shop/1.0\r\ncontent-type: application/x-unknown\r\ncontent-length: 100000\r\n\r\n";
    c.stream.write_all(head.as_bytes()).await?;
    c.stream.write_all(&[b'a'; 1000]).await?;
    let refused = c.read_response().await?;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)).await);
    assert_eq!(up.hits(), 40);
    Ok(())
}

#[tokio::test]
async fn parser_refusals_are_events_with_the_reason() -> Result<()> {
    let up = start_upstream().await?;
    for mode in [Mode::Learn, Mode::Block] {
        let mut gate = start_gate(test_config(mode), Profile::default(), up.addr).await?;
        for target in ["/search?q=<script>", "/a<b>", "/x`id`", "/q?a=\"b\""] {
            let mut c = Client::connect(gate.addr).await?;
            let raw = format!("GET {target} HTTP/1.1\r\nhost: t\r\n\r\n");
            c.stream.write_all(raw.as_bytes()).await?;
            let resp = c.read_response().await?;
            assert_eq!(resp.status, 400, "{target}");
            assert!(c.closed_within(Duration::from_secs(5)).await);
            let mut events = Vec::new();
            for _ in 0..50 {
                events.extend(gate.drain_events());
                if !events.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let refused: Vec<_> = events
                .iter()
                .filter(|e| e.kind == EventKind::Refused)
                .collect();
            assert_eq!(refused.len(), 1, "{target}: {events:?}");
            let reason = &refused[0].reasons[0];
            assert!(
                reason.starts_with("http: request refused by the parser: "),
                "{reason}"
            );
            assert!(reason.contains(target), "{reason} names {target}");
        }
    }
    assert_eq!(up.hits(), 0);
    Ok(())
}
