//! The HTTP gate of a pod: configured by pod annotations, listening inside the pod's network
//! namespace, proxying to the container's port on the pod's loopback, learning into a profile
//! that persists per service in the node's state directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_gate::{
    AutoAlert, Connector, EventSink, Gate, GateConfig, GateEvent, Mode, Profile, Promotion,
    ServiceProfiles, SharedProfile, Strictness,
};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::netns::{NetnsError, NetnsSockets};
use crate::report::Reporter;

/// `listen=8000,upstream=8080[,service=name][,bodies=off]`
pub const GATE_ANNOTATION: &str = "palisade.dev/gate";
/// `auto` (default: learn, then alert, then block by the gate's promotion rule), or `learn`,
/// `alert`, `block` to hold the service at that stage.
pub const GATE_MODE_ANNOTATION: &str = "palisade.dev/gate-mode";
/// How often a running gate writes what it learned.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// A gate that cannot be set up; the pod must not start.
#[derive(Debug, thiserror::Error)]
pub enum GateSetupError {
    #[error("pod annotation {annotation}: {reason}")]
    Annotation {
        annotation: &'static str,
        reason: String,
    },
    #[error("gate: the pod has no network namespace of its own (host network?)")]
    NoNetns,
    #[error("gate: {0}")]
    Netns(#[from] NetnsError),
    #[error("gate: profile store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

pub use palisade_config::GateSettings;

/// What the pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRequest {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub service: String,
    pub mode: Mode,
    /// Whether the operator holds the service at `mode` (no automatic promotion).
    pub held: bool,
    pub inspect_bodies: bool,
    /// The container the gate's evidence counts against in compromise decisions; every
    /// container of the pod when unset.
    pub container: Option<String>,
}

/// Reads the gate annotations of a pod sandbox spec; `None` when the pod asks for no gate.
pub fn requested(spec: &Value) -> Result<Option<GateRequest>, GateSetupError> {
    let ann = &spec["annotations"];
    let Some(text) = ann[GATE_ANNOTATION].as_str() else {
        if ann[GATE_MODE_ANNOTATION].is_string() {
            return Err(bad(
                GATE_MODE_ANNOTATION,
                format!("set without {GATE_ANNOTATION}"),
            ));
        }
        return Ok(None);
    };
    let (mut listen, mut upstream, mut service, mut bodies) = (None, None, None, true);
    let mut container = None;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(GATE_ANNOTATION, format!("{part:?}: expected key=value")))?;
        match k.trim() {
            "listen" => listen = Some(address(v, Ipv4Addr::UNSPECIFIED)?),
            "upstream" => upstream = Some(address(v, Ipv4Addr::LOCALHOST)?),
            "service" => service = Some(service_name(v)?),
            "container" => {
                let name = v.trim();
                if name.is_empty() {
                    return Err(bad(GATE_ANNOTATION, "container= needs a name".into()));
                }
                container = Some(name.to_string());
            }
            "bodies" => {
                bodies = match v.trim() {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(bad(
                            GATE_ANNOTATION,
                            format!("bodies={other}: expected on or off"),
                        ))
                    }
                }
            }
            other => {
                return Err(bad(
                    GATE_ANNOTATION,
                    format!(
                    "unknown key {other:?}: expected listen, upstream, service, bodies, container"
                ),
                ))
            }
        }
    }
    let listen = listen.ok_or_else(|| bad(GATE_ANNOTATION, "listen=<port> is required".into()))?;
    let upstream =
        upstream.ok_or_else(|| bad(GATE_ANNOTATION, "upstream=<port> is required".into()))?;
    if listen.port() == upstream.port()
        && (upstream.ip().is_loopback() || listen.ip() == upstream.ip())
    {
        return Err(bad(
            GATE_ANNOTATION,
            format!("listen and upstream are both port {}", listen.port()),
        ));
    }
    let (mode, held) = match ann[GATE_MODE_ANNOTATION].as_str().map(str::trim) {
        None | Some("auto") => (Mode::Learn, false),
        Some("learn") => (Mode::Learn, true),
        Some("alert") => (Mode::Alert, true),
        Some("block") => (Mode::Block, true),
        Some(other) => {
            return Err(bad(
                GATE_MODE_ANNOTATION,
                format!("{other:?}: expected auto, learn, alert or block"),
            ))
        }
    };
    let service = match service {
        Some(s) => s,
        None => default_service(spec)?,
    };
    Ok(Some(GateRequest {
        listen,
        upstream,
        service,
        mode,
        held,
        inspect_bodies: bodies,
        container,
    }))
}

fn bad(annotation: &'static str, reason: String) -> GateSetupError {
    GateSetupError::Annotation { annotation, reason }
}

fn address(v: &str, default_ip: Ipv4Addr) -> Result<SocketAddr, GateSetupError> {
    let v = v.trim();
    if let Ok(port) = v.parse::<u16>() {
        if port == 0 {
            return Err(bad(GATE_ANNOTATION, "port 0 is not a port".into()));
        }
        return Ok(SocketAddr::new(IpAddr::V4(default_ip), port));
    }
    v.parse::<SocketAddr>().map_err(|_| {
        bad(
            GATE_ANNOTATION,
            format!("{v:?}: expected a port or ip:port"),
        )
    })
}

fn service_name(v: &str) -> Result<String, GateSetupError> {
    let v = v.trim();
    let ok = !v.is_empty()
        && v.len() <= 120
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(
            GATE_ANNOTATION,
            format!("service={v:?}: letters, digits, '-', '_' and '.' only"),
        ))
    }
}

/// `<namespace>_<workload>`, the workload being the pod name without the suffixes that
/// Deployments (`-<hash>-<5 chars>`) and StatefulSets (`-<ordinal>`) add.
fn default_service(spec: &Value) -> Result<String, GateSetupError> {
    let ann = &spec["annotations"];
    let ns = ann[crate::cri::SANDBOX_NAMESPACE]
        .as_str()
        .unwrap_or("default");
    let pod = ann[crate::cri::SANDBOX_NAME].as_str().unwrap_or("pod");
    service_name(&format!("{ns}_{}", workload_of(pod)))
}

/// The workload of a pod: the node's one derivation, shared with the learned profiles.
fn workload_of(pod: &str) -> &str {
    palisade_profile::workload_name(pod)
}

/// The network namespace path of a pod sandbox spec.
pub fn netns_path(spec: &Value) -> Option<PathBuf> {
    spec["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Connects from inside the pod's network namespace.
struct PodConnector(NetnsSockets);

impl Connector for PodConnector {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>
    {
        let sockets = self.0.clone();
        Box::pin(async move {
            let sock = sockets
                .tcp_socket(addr.is_ipv6())
                .await
                .map_err(std::io::Error::other)?;
            sock.connect(addr).await
        })
    }
}

/// Reports gate events in palisade's event schema.
struct EventLog {
    node: String,
    workload: palisade_events::Workload,
    reporter: Reporter,
}

impl EventSink for EventLog {
    fn emit(&self, event: GateEvent) {
        match event.to_event(&self.node, self.workload.clone()) {
            Ok(e) => self.reporter.report(e),
            Err(err) => tracing::error!("gate event: {err}"),
        }
    }
}

/// A gate serving one pod.
pub struct RunningGate {
    gate: Gate,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<()>,
    saver: JoinHandle<()>,
    file: PathBuf,
}

impl std::fmt::Debug for RunningGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGate")
            .field("file", &self.file)
            .field("mode", &self.gate.mode())
            .finish()
    }
}

impl RunningGate {
    /// Opens the listener inside the pod's network namespace and starts serving.
    pub async fn start(
        pod_id: &str,
        spec: &Value,
        req: GateRequest,
        settings: &GateSettings,
        node: &str,
        reporter: Reporter,
    ) -> Result<Self, GateSetupError> {
        let netns = netns_path(spec).ok_or(GateSetupError::NoNetns)?;
        let sockets = NetnsSockets::enter(&netns)?;
        let listener = sockets.listen(req.listen).await?;
        let store_err = |e: palisade_gate::PersistError| GateSetupError::Store {
            path: settings.state_dir.join(&req.service),
            reason: e.to_string(),
        };
        let store = ServiceProfiles::of(&settings.state_dir, &req.service).map_err(store_err)?;
        let (profile, unreadable) = load_service(&store)?;
        let file = store.file(pod_id).map_err(store_err)?;
        // The gate never decides with a profile it could not read: back to learning.
        let (mode, held) = if unreadable && profile.requests_learned() == 0 {
            tracing::error!(service = %req.service, "gate: no readable profile, the service learns afresh");
            (Mode::Learn, false)
        } else {
            (req.mode, req.held)
        };
        let shared = SharedProfile::new(profile);
        let ann = &spec["annotations"];
        let workload = palisade_events::Workload {
            namespace: ann[crate::cri::SANDBOX_NAMESPACE]
                .as_str()
                .unwrap_or_default()
                .into(),
            pod: ann[crate::cri::SANDBOX_NAME]
                .as_str()
                .unwrap_or_default()
                .into(),
            container: String::new(),
            container_id: pod_id.into(),
            image: String::new(),
        };
        let config = GateConfig {
            service: format!("{}/{}", workload.namespace, workload.pod),
            mode,
            auto_alert: (!held).then_some(AutoAlert {
                min_requests: settings.learn_requests,
                min_duration: Duration::from_secs(settings.learn_seconds),
            }),
            promotion: Promotion {
                field_values: settings.field_values,
                quiet: (settings.quiet_seconds > 0)
                    .then(|| Duration::from_secs(settings.quiet_seconds)),
                ..Promotion::default()
            },
            inspect_bodies: req.inspect_bodies,
            ..GateConfig::default()
        };
        let sink = Arc::new(EventLog {
            node: node.to_string(),
            workload,
            reporter,
        });
        let gate = Gate::with_connector(
            config,
            shared.clone(),
            sink,
            Arc::new(PodConnector(sockets)),
        );
        let (shutdown, mut stop) = watch::channel(false);
        let serving = gate.clone();
        let upstream = req.upstream;
        let serve = tokio::spawn(async move {
            let stop_fut = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = serving.serve_until(listener, upstream, stop_fut).await {
                tracing::error!("gate stopped: {e}");
            }
        });
        let saver = tokio::spawn(save_periodically(shared, file.clone()));
        tracing::info!(
            pod = %pod_id, listen = %req.listen, upstream = %req.upstream, service = %req.service, mode = ?req.mode,
            "gate serving"
        );
        Ok(RunningGate {
            gate,
            shutdown,
            serve,
            saver,
            file,
        })
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Stops serving and writes what was learned.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.serve).await;
        self.saver.abort();
        save(&self.gate.profile().snapshot(), &self.file);
    }
}

async fn save_periodically(shared: SharedProfile, file: PathBuf) {
    let mut saved = 0;
    loop {
        tokio::time::sleep(SAVE_EVERY).await;
        let p = shared.snapshot();
        if p.requests_learned() != saved {
            saved = p.requests_learned();
            save(&p, &file);
        }
    }
}

fn save(profile: &Profile, file: &Path) {
    if let Some(dir) = file.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::error!("gate profile {}: {e}", dir.display());
            return;
        }
    }
    if let Err(e) = palisade_gate::save(profile, file) {
        tracing::error!("gate profile {}: {e}", file.display());
    }
}

/// Merges the profiles the pods of the service left on this node (`ServiceProfiles`, newest
/// first, bounded) and prunes older files. A file that cannot be read is skipped with an error
/// in the log; the second value says whether one was, so that a service whose profile is
/// unreadable learns afresh instead of deciding with what is left.
fn load_service(store: &ServiceProfiles) -> Result<(Profile, bool), GateSetupError> {
    let store_err = |e: palisade_gate::PersistError| GateSetupError::Store {
        path: store.dir.clone(),
        reason: e.to_string(),
    };
    let merged = store.merged(Strictness::Lenient).map_err(store_err)?;
    for (_, e) in &merged.skipped {
        tracing::error!("gate {e}: skipped, the service learns without it");
    }
    if let Err(e) = store.prune() {
        tracing::warn!("gate: pruning old profiles: {e}");
    }
    Ok((
        merged.profile.unwrap_or_default(),
        !merged.skipped.is_empty(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(gate: Option<&str>, mode: Option<&str>) -> Value {
        let mut ann = json!({
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.sandbox-name": "web-7d9f8c6b5-x2k4q",
        });
        if let Some(g) = gate {
            ann[GATE_ANNOTATION] = json!(g);
        }
        if let Some(m) = mode {
            ann[GATE_MODE_ANNOTATION] = json!(m);
        }
        json!({"annotations": ann, "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]}})
    }

    #[test]
    fn parses_the_annotations() {
        let r = requested(&spec(Some("listen=8000,upstream=8080"), Some("block")))
            .unwrap()
            .unwrap();
        assert_eq!(r.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(r.upstream, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((r.mode, r.held), (Mode::Block, true));
        assert_eq!(r.service, "shop_web");
        assert!(r.inspect_bodies);
        let r = requested(&spec(
            Some("listen=8000, upstream=8080, service=cart, bodies=off, container=web"),
            None,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.service.as_str(), r.mode, r.inspect_bodies),
            ("cart", Mode::Learn, false)
        );
        assert!(!r.held, "no gate-mode: promoted automatically");
        assert_eq!(r.container.as_deref(), Some("web"));
        assert_eq!(requested(&spec(None, None)).unwrap(), None);
        assert_eq!(
            netns_path(&spec(None, None)),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
    }

    #[test]
    fn bad_annotations_say_what_is_wrong() {
        let cases = [
            (spec(Some("listen=8000"), None), "pod annotation palisade.dev/gate: upstream=<port> is required"),
            (spec(Some("listen=80x,upstream=1"), None), "pod annotation palisade.dev/gate: \"80x\": expected a port or ip:port"),
            (spec(Some("listen=8000,upstream=8080,color=red"), None), "pod annotation palisade.dev/gate: unknown key \"color\": expected listen, upstream, service, bodies, container"),
            (spec(Some("listen=8000,upstream=8080,container="), None), "pod annotation palisade.dev/gate: container= needs a name"),
            (spec(Some("listen=8000,upstream=8000"), None), "pod annotation palisade.dev/gate: listen and upstream are both port 8000"),
            (spec(Some("listen=8000,upstream=8080"), Some("deny")), "pod annotation palisade.dev/gate-mode: \"deny\": expected auto, learn, alert or block"),
            (spec(None, Some("block")), "pod annotation palisade.dev/gate-mode: set without palisade.dev/gate"),
            (spec(Some("listen=8000,upstream=8080,service=../etc"), None), "pod annotation palisade.dev/gate: service=\"../etc\": letters, digits, '-', '_' and '.' only"),
        ];
        for (s, want) in cases {
            assert_eq!(requested(&s).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn workload_names_drop_controller_suffixes() {
        assert_eq!(workload_of("web-7d9f8c6b5-x2k4q"), "web");
        assert_eq!(workload_of("db-0"), "db");
        assert_eq!(workload_of("batch-job-x7bzq"), "batch-job");
        // Kubernetes never generates vowels: a name's own last word stays.
        assert_eq!(workload_of("web-cache"), "web-cache");
        assert_eq!(workload_of("plain"), "plain");
    }

    #[test]
    fn service_profiles_merge_across_pods() {
        let state = tempfile::tempdir().unwrap();
        let none = ServiceProfiles::of(state.path(), "none").unwrap();
        assert_eq!(load_service(&none).unwrap().0.requests_learned(), 0);
        let store = ServiceProfiles::of(state.path(), "shop_web").unwrap();
        std::fs::create_dir_all(&store.dir).unwrap();
        let dir = &store;
        let mut a = Profile::default();
        let mut b = Profile::default();
        let get = palisade_gate::Request::new("GET", "HTTP/1.1", "/a?id=1", vec![], None);
        let post = palisade_gate::Request::new("POST", "HTTP/1.1", "/b", vec![], None);
        a.learn(&get);
        b.learn(&post);
        palisade_gate::save(&a, &dir.file("pod1").unwrap()).unwrap();
        palisade_gate::save(&b, &dir.file("pod2").unwrap()).unwrap();
        std::fs::write(dir.file("pod3").unwrap(), "{\"version\":1}").unwrap();
        let (merged, unreadable) = load_service(dir).unwrap();
        assert!(unreadable, "the old file is skipped");
        assert_eq!(merged.requests_learned(), 2);
        assert!(palisade_gate::decide(&merged, &get).is_clean());
        assert!(palisade_gate::decide(&merged, &post).is_clean());
    }
}
