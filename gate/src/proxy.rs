//! The proxy: accepts connections on a listener the shim bound, parses HTTP/1.1, asks
//! `decide`, and forwards to the upstream service; it moves bytes and nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::body::Body as _;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, UPGRADE};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::body::{read_ahead, GateBody};
use crate::decide::{decide_remembering, decide_response_parts, is_slow_after, Accepted};
use crate::events::{Dedup, EventKind, EventSink, GateEvent};
use crate::idle::{within_idle_timeout, Activity};
use crate::indicators::{IndicatorState, PodIndicators};
use crate::mode::{AutoAlert, Mode, Promotion, Stages};
use crate::refusal::{close_after, drain, parser_reason, Recording};
use crate::request::{pairs_retained_bytes, refill_headers, Request, Response};
pub use crate::shared::SharedProfile;
use crate::upstream::{tunnel, Connector, DirectConnector, Upstream};

/// How a gate runs.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Names the service in logs (the shim passes pod and container).
    pub service: String,
    /// Mode at start.
    pub mode: Mode,
    /// Promote from learn to alert once enough was learned (and on to block by
    /// `promotion`); `None` holds the gate at `mode`.
    pub auto_alert: Option<AutoAlert>,
    /// The rest of the promotion rule (`mode.rs`): variety per field, quiet window.
    pub promotion: Promotion,
    /// Time a client has to send a request head, also the idle time of a kept-alive
    /// connection: a client that sends headers slowly (slowloris) is dropped after it.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones are closed on accept.
    pub max_connections: usize,
    /// Largest request head accepted (hyper's read buffer; at least 8 KiB); larger heads are
    /// answered 431.
    pub max_head_bytes: usize,
    /// Whether JSON and form bodies are read ahead and inspected.
    pub inspect_bodies: bool,
    /// Bodies larger than this are forwarded without inspection.
    pub max_inspected_body: usize,
    /// Time a client has to send a body that is read ahead for inspection; a client that
    /// trickles its body is answered 408 instead of holding a connection.
    pub body_read_timeout: Duration,
    /// Identical events within this window are reported once, with a count.
    pub alert_window: Duration,
    /// Time allowed to connect to the upstream.
    pub upstream_connect_timeout: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            service: String::new(),
            mode: Mode::Learn,
            auto_alert: Some(AutoAlert {
                min_requests: 10_000,
                min_duration: Duration::from_secs(3600),
            }),
            promotion: Promotion::default(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_head_bytes: 16 * 1024,
            inspect_bodies: true,
            max_inspected_body: 32 * 1024,
            body_read_timeout: Duration::from_secs(30),
            alert_window: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Failures that stop a gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The listener handed in could not be used.
    #[error("gate listener: {0}")]
    Listener(#[source] std::io::Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An HTTP gate in front of one service. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    config: GateConfig,
    profile: SharedProfile,
    sink: Arc<dyn EventSink>,
    connector: Arc<dyn Connector>,
    mode: Mutex<Stages>,
    dedup: Mutex<Dedup>,
    indicators: Mutex<IndicatorState>,
    id_prefix: u32,
    next_id: AtomicU64,
}

/// One client connection: its upstream side and its slot under the connection limit.
struct Connection {
    upstream: Upstream,
    slot: Arc<OwnedSemaphorePermit>,
    peer: SocketAddr,
    /// The request and response samples of the last request, whose strings the next request
    /// of the connection refills instead of allocating its own. Boxed: a request takes it
    /// and puts it back by moving a pointer, not the whole.
    scratch: Mutex<Option<Box<Scratch>>>,
    /// Whether the pod indicators know the peer already (they never forget one): its
    /// requests are then counted without looking it up.
    peer_known: AtomicBool,
}

#[derive(Default)]
struct Scratch {
    req: Request,
    resp: Response,
    /// Request and response header values the profile accepted on this connection.
    accepted_req: Accepted,
    accepted_resp: Accepted,
}

/// Samples holding more memory than this are dropped after their request rather than kept
/// for the next: a connection keeps at most this much between requests.
const SCRATCH_KEPT_BYTES: usize = 4096;

impl Connection {
    fn take_scratch(&self) -> Box<Scratch> {
        lock(&self.scratch).take().unwrap_or_default()
    }

    fn keep_scratch(&self, mut scratch: Box<Scratch>) {
        // A parsed body is no buffer to reuse; it would only hold memory.
        scratch.req.body = None;
        let held = scratch.req.retained_bytes()
            + pairs_retained_bytes(&scratch.resp.headers)
            + scratch.accepted_req.retained_bytes()
            + scratch.accepted_resp.retained_bytes();
        if held <= SCRATCH_KEPT_BYTES {
            *lock(&self.scratch) = Some(scratch);
        }
    }
}

/// A request's id, `prefix-number` in hex; formatted only when a log line, an event or an
/// answer of the gate's own carries it, not for every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestId {
    prefix: u32,
    n: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{:08x}", self.prefix, self.n)
    }
}

/// Distinct events remembered for de-duplication.
const DEDUP_ENTRIES: usize = 1024;
/// Longest request path carried in an event.
const EVENT_PATH_LEN: usize = 256;

impl Gate {
    /// A gate that learns into and decides with `profile` and reports to `sink`.
    pub fn new(config: GateConfig, profile: SharedProfile, sink: Arc<dyn EventSink>) -> Self {
        Self::with_connector(config, profile, sink, Arc::new(DirectConnector))
    }

    /// A gate that reaches its upstream through `connector` (the shim's makes its sockets
    /// inside the pod's network namespace).
    pub fn with_connector(
        config: GateConfig,
        profile: SharedProfile,
        sink: Arc<dyn EventSink>,
        connector: Arc<dyn Connector>,
    ) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Request ids only need to be unique per gate and unlikely to repeat across restarts.
        let id_prefix = (now.as_nanos() as u32) ^ std::process::id().rotate_left(16);
        Gate {
            inner: Arc::new(Inner {
                mode: Mutex::new(Stages::new(
                    config.mode,
                    config.auto_alert,
                    config.promotion,
                    Instant::now(),
                )),
                dedup: Mutex::new(Dedup::new(config.alert_window, DEDUP_ENTRIES)),
                config,
                profile,
                sink,
                connector,
                indicators: Mutex::new(IndicatorState::default()),
                id_prefix,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The current mode (after any automatic switch).
    pub fn mode(&self) -> Mode {
        self.current_mode()
    }

    /// Sets the mode by hand; the automatic switch no longer applies.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.inner.mode).set(mode, Instant::now());
    }

    /// The profile this gate learns into.
    pub fn profile(&self) -> &SharedProfile {
        &self.inner.profile
    }

    /// Pod indicators accumulated since the last call.
    pub fn indicators(&self) -> PodIndicators {
        lock(&self.inner.indicators).take()
    }

    /// Serves connections from `listener` (already bound, possibly inside the pod's network
    /// namespace) and forwards them to `upstream`, until the listener fails.
    pub async fn serve(
        &self,
        listener: std::net::TcpListener,
        upstream: SocketAddr,
    ) -> Result<(), GateError> {
        self.serve_until(listener, upstream, std::future::pending())
            .await
    }

    /// Like `serve`, returning when `shutdown` completes; connections already accepted
    /// finish on their own.
    pub async fn serve_until(
        &self,
        listener: std::net::TcpListener,
        upstream: SocketAddr,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), GateError> {
        listener
            .set_nonblocking(true)
            .map_err(GateError::Listener)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(GateError::Listener)?;
        let permits = Arc::new(Semaphore::new(self.inner.config.max_connections));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or an aborted handshake: back off briefly, keep serving.
                    tracing::warn!(error = %e, "gate: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(service = %self.inner.config.service, %peer, "gate: connection limit reached, closing connection");
                drop(stream);
                continue;
            };
            let gate = self.clone();
            let span = tracing::debug_span!("gate", service = %self.inner.config.service, %peer);
            tokio::spawn(
                async move { gate.connection(stream, peer, upstream, permit).await }
                    .instrument(span),
            );
        }
    }

    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        upstream: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection {
            upstream: Upstream::new(
                upstream,
                self.inner.config.upstream_connect_timeout,
                self.inner.connector.clone(),
            ),
            slot: Arc::new(slot),
            peer,
            scratch: Mutex::new(None),
            peer_known: AtomicBool::new(false),
        });
        let activity = Activity::new();
        let gate = self.clone();
        let requests = activity.clone();
        let service = service_fn(move |req| {
            let gate = gate.clone();
            let conn = conn.clone();
            let busy = requests.begin();
            async move {
                let mut resp = gate.handle(req, &conn).await;
                resp.body_mut().hold(busy);
                Ok::<_, Infallible>(resp)
            }
        });
        // The header read timeout is kept by `within_idle_timeout`, with one timer per
        // connection, rather than by hyper, which arms a fresh timer for every request. Head
        // and body are copied into one buffer and written at once (`writev(false)`): cheaper
        // than a vectored write for the small answers most are. `half_close`: while a request
        // is being answered, hyper does not read ahead to notice the client closing (such a
        // read reserves a fresh read buffer each request, the old one being still held by the
        // request's head); a client that shuts down its side after sending a request gets its
        // answer, and one that went away is noticed when the answer is written.
        let mut builder = server::Builder::new();
        builder
            .header_read_timeout(None)
            .half_close(true)
            .writev(false)
            .max_buf_size(self.inner.config.max_head_bytes.max(8192))
            .keep_alive(true);
        let (stream, last_read) = Recording::new(stream);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let timeout = self.inner.config.header_read_timeout;
        match within_idle_timeout(conn, &activity, timeout).await {
            Some(Ok(())) => {}
            // hyper answered 400 or 431 itself; the request never reached the rules, so the
            // refusal is reported here with what was sent.
            Some(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
                let reason = parser_reason(&e, &last_read);
                let id = self.request_id();
                self.report(
                    EventKind::Refused,
                    id,
                    vec![reason],
                    peer,
                    &Request::default(),
                );
            }
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "gate: connection ended"),
            None => tracing::debug!(%peer, "gate: no request head in time, connection closed"),
        }
    }

    fn current_mode(&self) -> Mode {
        let learned = self.inner.profile.read().requests_learned();
        let variety = |min| self.inner.profile.read().variety(min);
        let (mode, promoted) = lock(&self.inner.mode).current(learned, variety, Instant::now());
        if let Some(why) = promoted {
            let peer = SocketAddr::from(([0, 0, 0, 0], 0));
            self.report(
                EventKind::Stage,
                self.request_id(),
                vec![why],
                peer,
                &Request::default(),
            );
        }
        mode
    }

    fn request_id(&self) -> RequestId {
        RequestId {
            prefix: self.inner.id_prefix,
            n: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        conn: &Connection,
    ) -> hyper::Response<GateBody> {
        let mut scratch = conn.take_scratch();
        let resp = self.handle_with(req, conn, &mut scratch).await;
        conn.keep_scratch(scratch);
        resp
    }

    async fn handle_with(
        &self,
        mut req: hyper::Request<hyper::body::Incoming>,
        conn: &Connection,
        scratch: &mut Scratch,
    ) -> hyper::Response<GateBody> {
        let (peer, up) = (conn.peer, &conn.upstream);
        let id = self.request_id();
        let mode = self.current_mode();
        if conn.peer_known.load(Ordering::Relaxed) {
            lock(&self.inner.indicators).request_from_known();
        } else if lock(&self.inner.indicators).request(peer.ip(), mode == Mode::Learn) {
            conn.peer_known.store(true, Ordering::Relaxed);
        }
        let upgrade = is_upgrade(req.headers());
        let on_client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let sample = &mut scratch.req;
        fill_sample(sample, &req, peer.ip());
        let (mut parts, body) = req.into_parts();

        let body = if self.inner.config.inspect_bodies && !upgrade && sample.wants_body() {
            // Boxed, as the other rare paths: the future of every request, which hyper keeps
            // for each connection, stays small.
            match Box::pin(self.inspect_body(body, sample, id)).await {
                Ok(forward) => forward,
                Err(refusal) => return refusal,
            }
        } else {
            GateBody::stream(body)
        };
        let accepted = &mut scratch.accepted_req;
        if let Some(mut refusal) = self.learn_or_decide(mode, id, peer, sample, accepted) {
            // The client may send its next request on this connection: read the rest of this
            // one's body first, or close the connection saying so.
            let cfg = &self.inner.config;
            if !body.is_end_stream()
                && !drain(body, cfg.max_inspected_body, cfg.body_read_timeout).await
            {
                close_after(&mut refusal);
            }
            return refusal;
        }

        strip_hop_by_hop(&mut parts.headers, upgrade);
        let started = Instant::now();
        let target = origin_form(&parts.uri);
        let sent = if upgrade {
            Box::pin(up.send(&parts, target, body, true)).await
        } else {
            up.send(&parts, target, body, false).await
        };
        let answer = match sent {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(request_id = %id, upstream = %up.addr, error = %e, "gate: upstream failed");
                return plain(StatusCode::BAD_GATEWAY, id, "upstream unavailable");
            }
        };
        let elapsed = started.elapsed();
        let mut resp = answer.response;
        self.observe_response(&resp, elapsed, mode, id, peer, scratch);

        if let (Some(client_side), Some(upstream_side)) = (on_client_upgrade, answer.upgraded) {
            // The tunnel outlives the HTTP connection; it keeps the connection's slot so that
            // upgraded connections count against the limit too.
            let slot = conn.slot.clone();
            tokio::spawn(async move {
                tunnel(client_side, upstream_side, id).await;
                drop(slot);
            });
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(resp.headers_mut(), switching);
        resp
    }

    /// Reads the body ahead for inspection and attaches it to `sample`; returns the body to
    /// forward, or the answer to give instead when the body is too slow or unreadable.
    async fn inspect_body(
        &self,
        body: hyper::body::Incoming,
        sample: &mut Request,
        id: RequestId,
    ) -> Result<GateBody, hyper::Response<GateBody>> {
        let cfg = &self.inner.config;
        let read = tokio::time::timeout(
            cfg.body_read_timeout,
            read_ahead(body, cfg.max_inspected_body),
        );
        match read.await {
            Err(_) => {
                tracing::debug!(request_id = %id, "gate: request body too slow");
                let mut resp = plain(StatusCode::REQUEST_TIMEOUT, id, "request body too slow");
                close_after(&mut resp);
                Err(resp)
            }
            Ok(Ok((Some(bytes), forward))) => {
                sample.attach_body(&bytes);
                Ok(forward)
            }
            Ok(Ok((None, forward))) => {
                tracing::debug!(request_id = %id, "gate: body over inspection cap, not inspected");
                sample.body_over_cap = true;
                Ok(forward)
            }
            Ok(Err(e)) => {
                tracing::debug!(request_id = %id, error = %e, "gate: request body unreadable");
                let mut resp = plain(StatusCode::BAD_REQUEST, id, "request body unreadable");
                close_after(&mut resp);
                Err(resp)
            }
        }
    }

    /// Learns the request in learn mode; otherwise decides, reports a broken rule, and in
    /// block mode returns the refusal.
    fn learn_or_decide(
        &self,
        mode: Mode,
        id: RequestId,
        peer: SocketAddr,
        sample: &Request,
        accepted: &mut Accepted,
    ) -> Option<hyper::Response<GateBody>> {
        if mode == Mode::Learn {
            self.inner.profile.write().learn(sample);
            return None;
        }
        let decision = {
            let (profile, generation) = self.inner.profile.read_with_generation();
            accepted.renew(generation);
            decide_remembering(&profile, sample, Some(accepted))
        };
        if mode == Mode::Alert {
            lock(&self.inner.mode).decided(!decision.is_clean(), Instant::now());
        }
        if decision.is_clean() {
            return None;
        }
        lock(&self.inner.indicators).violation();
        let kind = if mode == Mode::Block {
            EventKind::Block
        } else {
            EventKind::Alert
        };
        self.report(kind, id, decision.reasons, peer, sample);
        (mode == Mode::Block).then(|| plain(StatusCode::FORBIDDEN, id, "request blocked by gate"))
    }

    fn observe_response(
        &self,
        resp: &hyper::Response<GateBody>,
        elapsed: Duration,
        mode: Mode,
        id: RequestId,
        peer: SocketAddr,
        scratch: &mut Scratch,
    ) {
        let status = resp.status().as_u16();
        if mode == Mode::Learn {
            let learned = &mut scratch.resp;
            learned.status = status;
            refill_headers(&mut learned.headers, header_bytes(resp.headers()));
            learned.elapsed = elapsed;
            self.inner.profile.write().learn_response(learned);
            return;
        }
        let (decision, slow) = {
            let (profile, generation) = self.inner.profile.read_with_generation();
            let accepted = &mut scratch.accepted_resp;
            accepted.renew(generation);
            let headers = || header_bytes(resp.headers());
            (
                decide_response_parts(&profile, status, headers, elapsed, Some(accepted)),
                is_slow_after(&profile, elapsed),
            )
        };
        if slow {
            lock(&self.inner.indicators).slow_response();
        }
        if !decision.is_clean() {
            self.report(
                EventKind::Response,
                id,
                decision.reasons,
                peer,
                &scratch.req,
            );
        }
    }

    fn report(
        &self,
        kind: EventKind,
        id: RequestId,
        reasons: Vec<String>,
        peer: SocketAddr,
        req: &Request,
    ) {
        let key = format!("{kind:?}\n{}", reasons.join("\n"));
        let Some(count) = lock(&self.inner.dedup).admit(&key, Instant::now()) else {
            return;
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let path: String = req.raw_path.chars().take(EVENT_PATH_LEN).collect();
        tracing::info!(service = %self.inner.config.service, request_id = %id, ?kind, %peer, %path, count, "gate: rules broken");
        self.inner.sink.emit(GateEvent {
            kind,
            request_id: id.to_string(),
            reasons,
            client: peer,
            method: req.method.clone(),
            path,
            count,
            unix_ms,
        });
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers that belong to one hop. On an upgrade, `Connection` and what it names
/// (`Upgrade`, `HTTP2-Settings`) travel on, since the upstream must see the upgrade request.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names present instead of a lookup
    // of each name that could be.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    const ALWAYS: [&str; 5] = [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
    ];
    if !upgrade {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    for name in ALWAYS {
        headers.remove(name);
    }
}

/// Whether `name` is a header that `strip_hop_by_hop` may remove: `Connection`, `Upgrade`, or
/// one of those removed always. A name listed in `Connection` is removed only with it.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
    )
}

/// The upstream is a plain origin server: send it `path?query` (or `*`), never an absolute
/// URI.
fn origin_form(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

fn header_bytes(headers: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))
}

/// The protocol as the profile names it (`HTTP/1.1`): what `Version`'s `Debug` prints, without
/// formatting for each request.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Makes `sample` the gate's view of `req`.
fn fill_sample(sample: &mut Request, req: &hyper::Request<hyper::body::Incoming>, client: IpAddr) {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    sample.refill(
        req.method().as_str(),
        protocol(req.version()),
        target,
        header_bytes(req.headers()),
        Some(client),
    );
}

fn plain(status: StatusCode, id: RequestId, text: &str) -> hyper::Response<GateBody> {
    let mut resp = hyper::Response::new(GateBody::full(format!("{text}: request id {id}\n")));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_except_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-end", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end"));

        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn absolute_targets_become_origin_form() {
        let u: Uri = "http://example.test/a/b?c=1".parse().unwrap();
        assert_eq!(origin_form(&u), "/a/b?c=1");
        let u: Uri = "/a/b?c=1".parse().unwrap();
        assert_eq!(origin_form(&u), "/a/b?c=1");
        let u: Uri = "*".parse().unwrap();
        assert_eq!(origin_form(&u), "*");
        let u: Uri = "example.test:443".parse().unwrap();
        assert_eq!(origin_form(&u), "/");
    }
}
