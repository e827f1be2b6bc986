//! The proxy on real loopback sockets: keep-alive, chunked bodies, upgrades, slowloris,
//! connection limits, upstream failure, de-duplication, mode switching, pod indicators.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{
    gate_to_upstream, start_gate, start_upstream, test_config, Client, HttpResponse, TestGate,
    TestRequest, Upstream,
};
use palisade_gate::{AutoAlert, EventKind, GateConfig, GateEvent, Mode, Profile, Promotion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

fn search(q: &str) -> TestRequest {
    TestRequest::get(&format!("/search?q={q}")).header("user-agent", "shop/1.0")
}

async fn learn(addr: std::net::SocketAddr, n: usize) -> Result<()> {
    let mut c = Client::connect(addr).await?;
    let words = ["red", "blue+hat", "warm+wool", "shoes", "green+socks"];
    for i in 0..n {
        let resp = c.send(&search(words[i % words.len()])).await?;
        assert_eq!(resp.status, 200);
    }
    Ok(())
}

/// The configuration every gate here starts from: learning, test limits.
fn learning() -> GateConfig {
    test_config(Mode::Learn)
}

/// A gate built from `config` in front of the test upstream, and one client connected to it.
async fn connected(config: GateConfig) -> Result<(Upstream, TestGate, Client)> {
    let (up, gate) = gate_to_upstream(config).await?;
    let c = Client::connect(gate.addr).await?;
    Ok((up, gate, c))
}

/// `connected` with the learning configuration changed by `change`.
async fn connected_with(
    change: impl FnOnce(&mut GateConfig),
) -> Result<(Upstream, TestGate, Client)> {
    let mut config = learning();
    change(&mut config);
    connected(config).await
}

/// `connected_with(change)`, and the client has sent `unfinished`, the start of a request.
async fn sent_unfinished(
    change: impl FnOnce(&mut GateConfig),
    unfinished: &[u8],
) -> Result<(Upstream, TestGate, Client)> {
    let (up, gate, mut c) = connected_with(change).await?;
    c.stream.write_all(unfinished).await?;
    Ok((up, gate, c))
}

/// The request alerts among `events`.
fn alerts(events: Vec<GateEvent>) -> Vec<GateEvent> {
    events
        .into_iter()
        .filter(|e| e.kind == EventKind::Alert)
        .collect()
}

/// Writes `msg` into an upgraded connection and expects the upstream's echo of it.
async fn assert_echoed(c: &mut Client, msg: &[u8]) -> Result<()> {
    c.stream.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), c.stream.read_exact(&mut got)).await??;
    assert_eq!(got, msg, "echoed through the tunnel");
    Ok(())
}

/// Asks for an upgrade of `c` to `protocol` (with `connection`, then `extra` headers) and
/// expects 101 naming it.
async fn upgrade(
    c: &mut Client,
    target: &str,
    (connection, protocol): (&str, &str),
    extra: &[(&str, &str)],
) -> Result<HttpResponse> {
    let mut req = TestRequest::get(target)
        .header("connection", connection)
        .header("upgrade", protocol);
    for (k, v) in extra {
        req = req.header(k, v);
    }
    let resp = c.send(&req).await?;
    assert_eq!(resp.status, 101, "upgrade to {protocol}");
    assert_eq!(resp.header("upgrade"), Some(protocol));
    Ok(resp)
}

/// With every connection slot taken, a new connection is closed at once; `settle` after
/// `holder` closes, a new one is served in its slot.
async fn refused_until_freed(
    addr: std::net::SocketAddr,
    holder: Client,
    settle: Duration,
) -> Result<()> {
    let mut refused = Client::connect(addr).await?;
    assert!(
        refused.closed_within(Duration::from_secs(2)).await,
        "a connection beyond the limit is closed"
    );
    drop(holder);
    tokio::time::sleep(settle).await;
    let mut again = Client::connect(addr).await?;
    assert_eq!(
        again.send(&search("red")).await?.status,
        200,
        "the freed slot is reused"
    );
    Ok(())
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() -> Result<()> {
    let (up, gate, mut c) = connected(learning()).await?;
    for i in 0..5 {
        let resp = c.send(&search(&format!("item{i}"))).await?;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("server"), Some("test-upstream"));
        assert_eq!(resp.body, b"{\"ok\":true,\"received\":0}");
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(gate.gate.profile().snapshot().requests_learned(), 5);
    Ok(())
}

async fn send_chunked(c: &mut Client, content_type: &str, chunks: &[&[u8]]) -> Result<Vec<u8>> {
    let mut head = format!(
        "POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    c.stream.write_all(&head).await?;
    head.clear();
    for chunk in chunks {
        c.stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await?;
        c.stream.write_all(chunk).await?;
        c.stream.write_all(b"\r\n").await?;
        c.stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.stream.write_all(b"0\r\n\r\n").await?;
    let resp = c.read_response().await?;
    assert_eq!(resp.status, 200);
    Ok(resp.body)
}

#[tokio::test]
async fn chunked_bodies_pass_through_inspected_or_not() -> Result<()> {
    let (up, gate, mut c) = connected_with(|c| c.max_inspected_body = 64).await?;

    // Small JSON body: read ahead, inspected (learned), then forwarded whole.
    let body = send_chunked(
        &mut c,
        "application/json",
        &[b"{\"name\":", b"\"box\",\"n\":", b"3}"],
    )
    .await?;
    assert_eq!(body, b"{\"name\":\"box\",\"n\":3}");
    let doc = palisade_gate::export(&gate.gate.profile().snapshot())?;
    assert!(doc.contains("\".name\""), "json body was learned: {doc}");

    // Larger than the inspection cap: forwarded intact, read-ahead part included.
    let big: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("{{\"k{i}\":\"{}\"}}", "x".repeat(30)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = big.iter().map(|v| v.as_slice()).collect();
    let body = send_chunked(&mut c, "application/json", &refs).await?;
    assert_eq!(body, big.concat());

    // Not an inspected type: streamed as it comes, on the same kept-alive connection.
    let body = send_chunked(&mut c, "application/octet-stream", &[b"abc", b"def"]).await?;
    assert_eq!(body, b"abcdef");
    assert_eq!(up.hits(), 3);
    Ok(())
}

#[tokio::test]
async fn websocket_upgrade_tunnels_bytes_both_ways() -> Result<()> {
    let (_up, _gate, mut c) = connected(learning()).await?;
    let extra = [
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    upgrade(&mut c, "/ws", ("Upgrade", "websocket"), &extra).await?;
    for msg in [&b"hello"[..], b"\x81\x05world", b"binary\x00\xff"] {
        assert_echoed(&mut c, msg).await?;
    }
    Ok(())
}

#[tokio::test]
async fn h2c_upgrade_is_passed_through() -> Result<()> {
    let (_up, _gate, mut c) = connected(learning()).await?;
    let settings = [("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")];
    let resp = upgrade(&mut c, "/", ("Upgrade, HTTP2-Settings", "h2c"), &settings).await?;
    assert_eq!(
        resp.header("x-saw-http2-settings"),
        Some("yes"),
        "connection-named header forwarded"
    );
    assert_echoed(&mut c, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    Ok(())
}

#[tokio::test]
async fn slow_headers_are_dropped_after_the_timeout() -> Result<()> {
    let head = b"GET / HTTP/1.1\r\nhost: t\r\n";
    let header_timeout = |c: &mut GateConfig| c.header_read_timeout = Duration::from_millis(400);
    let (up, gate, mut slow) = sent_unfinished(header_timeout, head).await?;
    let started = std::time::Instant::now();
    let mut closed = false;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .stream
            .write_all(format!("x-drip-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        if slow.closed_within(Duration::from_millis(1)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "slow client still connected after 3 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "dropped after {:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 0, "nothing of it reached the upstream");

    // A normal client is served meanwhile and afterwards.
    let mut ok = Client::connect(gate.addr).await?;
    assert_eq!(ok.send(&search("red")).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() -> Result<()> {
    let (_up, gate, mut a) = connected_with(|c| c.max_connections = 2).await?;
    let mut b = Client::connect(gate.addr).await?;
    assert_eq!(a.send(&search("a")).await?.status, 200);
    assert_eq!(b.send(&search("b")).await?.status, 200);
    // The third connection is closed; once `a` goes, its slot is reused.
    refused_until_freed(gate.addr, a, Duration::from_millis(100)).await
}

#[tokio::test]
async fn unreachable_upstream_answers_502() -> Result<()> {
    // Bind then drop a listener: nothing listens on that port any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let gate = start_gate(learning(), Profile::default(), dead).await?;
    let mut c = Client::connect(gate.addr).await?;
    let resp = c.send(&search("x")).await?;
    assert_eq!(resp.status, 502);
    assert!(resp.header("x-request-id").is_some());
    Ok(())
}

#[tokio::test]
async fn repeated_alerts_are_reported_once_with_a_count() -> Result<()> {
    let config = GateConfig {
        alert_window: Duration::from_millis(1500),
        ..learning()
    };
    let (up, mut gate) = gate_to_upstream(config).await?;
    learn(gate.addr, 20).await?;
    gate.gate.set_mode(Mode::Alert);
    let mut c = Client::connect(gate.addr).await?;
    let attack = search("x%27%20OR%201%3D1--");
    for _ in 0..3 {
        assert_eq!(c.send(&attack).await?.status, 200);
    }
    // Response-time alerts may come too; this test is about request alerts.
    let first = alerts(gate.drain_events());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].count, 1);
    assert_eq!(first[0].kind, EventKind::Alert);
    assert!(
        first[0]
            .reasons
            .iter()
            .any(|r| r == "query.q: new punctuation '''"),
        "{:?}",
        first[0].reasons
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(c.send(&attack).await?.status, 200);
    let second = alerts(gate.drain_events());
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].count, 3,
        "the two suppressed repeats plus this one"
    );
    assert_eq!(up.hits(), 24);
    Ok(())
}

#[tokio::test]
async fn learning_switches_to_alert_after_enough_requests_and_time() -> Result<()> {
    let up = start_upstream().await?;
    let config = GateConfig {
        auto_alert: Some(AutoAlert {
            min_requests: 10,
            min_duration: Duration::from_secs(2),
        }),
        promotion: Promotion {
            field_values: 5,
            ..Promotion::default()
        },
        ..learning()
    };
    let started = tokio::time::Instant::now();
    let mut gate = start_gate(config, Profile::default(), up.addr).await?;
    learn(gate.addr, 9).await?;
    tokio::time::sleep_until(started + Duration::from_millis(2100)).await;
    assert_eq!(
        gate.gate.mode(),
        Mode::Learn,
        "enough time, too few requests"
    );
    learn(gate.addr, 1).await?;
    assert_eq!(gate.gate.mode(), Mode::Alert, "enough time and requests");
    let mut c = Client::connect(gate.addr).await?;
    assert_eq!(c.send(&search("shoes&debug=1")).await?.status, 200);
    let events = alerts(gate.drain_events());
    assert_eq!(events.len(), 1);
    assert!(events[0]
        .reasons
        .contains(&"query.debug: key not known".to_string()));
    Ok(())
}

#[tokio::test]
async fn pod_indicators_report_new_peers_and_slow_responses() -> Result<()> {
    let (_up, gate) = gate_to_upstream(learning()).await?;
    learn(gate.addr, 10).await?;
    let mut c = Client::connect(gate.addr).await?;
    assert_eq!(
        c.send(&TestRequest::get("/slow").header("user-agent", "shop/1.0"))
            .await?
            .status,
        200
    );
    let learned = gate.gate.indicators();
    assert!(
        learned.new_peers.is_empty(),
        "peers seen while learning are known"
    );
    assert_eq!(learned.requests, 11);

    gate.gate.set_mode(Mode::Alert);
    // A peer from another loopback address.
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse()?)?;
    let stream = socket.connect(gate.addr).await?;
    let mut other = Client::from_stream(stream);
    assert_eq!(other.send(&search("red")).await?.status, 200);
    // The upstream's /slow sleeps 400 ms; learned responses took a few ms at most.
    let mut c = Client::connect(gate.addr).await?;
    for _ in 0..5 {
        c.send(&search("red")).await?;
    }
    let slow_learned = gate.gate.indicators();
    assert_eq!(
        slow_learned.new_peers,
        vec!["127.0.0.2".parse::<std::net::IpAddr>()?]
    );
    assert_eq!(
        slow_learned.slow_responses, 0,
        "/slow was learned, nothing slower since"
    );
    Ok(())
}

#[tokio::test]
async fn the_header_timeout_counts_idle_time_not_answer_time() -> Result<()> {
    let (up, _gate, mut c) =
        connected_with(|c| c.header_read_timeout = Duration::from_millis(200)).await?;
    // The upstream takes 400 ms over /slow, twice the header timeout: the connection is busy
    // answering, not waiting for a head, so it is not cut, and stays usable afterwards.
    for _ in 0..2 {
        let resp = c.send(&TestRequest::get("/slow")).await?;
        assert_eq!(resp.status, 200);
    }
    assert_eq!(c.send(&TestRequest::get("/a")).await?.status, 200);
    // Idle after its last answer, it is closed once the timeout has passed.
    assert!(
        c.closed_within(Duration::from_secs(3)).await,
        "idle kept-alive connection still open after 3 s"
    );
    assert_eq!(up.hits(), 3);
    Ok(())
}

#[tokio::test]
async fn slow_responses_after_learning_are_indicators() -> Result<()> {
    let (_up, gate) = gate_to_upstream(learning()).await?;
    learn(gate.addr, 10).await?;
    gate.gate.set_mode(Mode::Alert);
    let mut c = Client::connect(gate.addr).await?;
    let resp = c
        .send(&TestRequest::get("/slow").header("user-agent", "shop/1.0"))
        .await?;
    assert_eq!(resp.status, 200);
    let ind = gate.gate.indicators();
    assert_eq!(ind.slow_responses, 1);
    Ok(())
}

/// An upstream that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), as services with short idle timeouts do.
async fn start_closing_upstream() -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn upstream_closing_idle_connections_causes_no_errors() -> Result<()> {
    let upstream = start_closing_upstream().await?;
    let gate = start_gate(learning(), Profile::default(), upstream).await?;
    let mut c = Client::connect(gate.addr).await?;
    for i in 0..10 {
        let resp = c.send(&search("red")).await?;
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.body, b"ok");
        if i % 2 == 0 {
            // Give the close time to arrive, and sometimes not.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn slow_inspected_bodies_are_answered_408() -> Result<()> {
    let (up, _gate, mut c) = sent_unfinished(
        |c| c.body_read_timeout = Duration::from_millis(300),
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
    )
    .await?;
    // 408 is the body timer's answer (a client that never sends the rest would otherwise wait
    // for the connection's idle timeout); no timing is asserted.
    let resp = c.read_response().await?;
    assert_eq!(resp.status, 408);
    assert_eq!(up.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn upgraded_connections_count_against_the_limit() -> Result<()> {
    let (_up, gate, mut ws) = connected_with(|c| c.max_connections = 1).await?;
    let upgrade = TestRequest::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket");
    assert_eq!(ws.send(&upgrade).await?.status, 101);
    assert_echoed(&mut ws, b"ping").await?;
    // The tunnel holds the only slot, and frees it when it closes.
    refused_until_freed(gate.addr, ws, Duration::from_millis(200)).await
}

#[tokio::test]
async fn oversized_request_heads_are_refused() -> Result<()> {
    let (up, gate, mut c) = connected_with(|c| c.max_head_bytes = 8192).await?;
    let big = search("red").header("cookie", &"a".repeat(20_000));
    let resp = c.send(&big).await?;
    assert_eq!(resp.status, 431, "oversized head refused");
    assert_eq!(up.hits(), 0);
    let mut ok = Client::connect(gate.addr).await?;
    assert_eq!(ok.send(&search("red")).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn serve_until_returns_on_shutdown_and_stops_listening() -> Result<()> {
    let up = start_upstream().await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (events, _rx) = tokio::sync::mpsc::channel(16);
    let gate = palisade_gate::Gate::new(
        learning(),
        palisade_gate::SharedProfile::default(),
        std::sync::Arc::new(events),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.serve_until(listener, up.addr, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let mut c = Client::connect(addr).await?;
    assert_eq!(c.send(&search("red")).await?.status, 200);
    stop.send(()).map_err(|_| anyhow::anyhow!("gate gone"))?;
    tokio::time::timeout(Duration::from_secs(5), serving).await???;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
    assert_eq!(gate.profile().snapshot().requests_learned(), 1);
    Ok(())
}

#[tokio::test]
async fn ambiguous_framing_never_reaches_the_upstream_undecided() -> Result<()> {
    let (up, gate) = gate_to_upstream(learning()).await?;
    // Content-Length and Transfer-Encoding together: the classic request-smuggling shape. If
    // gate and upstream framed it differently, "/smuggled" would reach the upstream without
    // passing the gate's decision.
    let attempts: [&[u8]; 2] = [
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for attempt in attempts {
        let mut c = Client::connect(gate.addr).await?;
        c.stream.write_all(attempt).await?;
        // Read whatever comes back until the gate closes or goes quiet.
        let mut sink = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(500), c.stream.read_to_end(&mut sink)).await;
    }
    let learned = gate.gate.profile().snapshot().requests_learned() as usize;
    assert_eq!(
        up.hits(),
        learned,
        "every request the upstream saw went through the gate's decision"
    );
    Ok(())
}

#[tokio::test]
async fn bodies_padded_past_the_inspection_cap_are_reported() -> Result<()> {
    let (_up, mut gate, mut c) = connected_with(|c| c.max_inspected_body = 256).await?;
    for i in 0..20 {
        let body = format!("{{\"name\":\"box{i}\"}}");
        send_chunked(&mut c, "application/json", &[body.as_bytes()]).await?;
    }
    gate.gate.set_mode(Mode::Alert);
    // An injection hidden behind padding, sent chunked so no Content-Length gives it away.
    let padded = format!(
        "{{\"pad\":\"{}\",\"name\":\"x' OR 1=1 --\"}}",
        "a".repeat(1000)
    );
    let echoed = send_chunked(&mut c, "application/json", &[padded.as_bytes()]).await?;
    assert_eq!(echoed, padded.as_bytes(), "forwarded intact");
    let events = gate.drain_events();
    let alert = events
        .iter()
        .find(|e| e.kind == EventKind::Alert)
        .expect("padded body reported");
    assert!(
        alert
            .reasons
            .contains(&"body: larger than the inspection cap".to_string()),
        "{:?}",
        alert.reasons
    );
    Ok(())
}
