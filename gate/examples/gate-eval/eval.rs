//! Runs the corpus through the gate (learning from the training set, then in block mode) or
//! through another proxy, and counts what each refused, by service and class.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_gate::{Gate, GateConfig, GateEvent, Mode, Profile, SharedProfile};

use crate::corpus::{Class, Sample};
use crate::generate::host_of;
use crate::run::{upstream, Client};

/// What was refused, per class, and the reasons or requests worth reading.
#[derive(Default, Debug)]
pub struct Tally {
    /// (total, refused) per class.
    pub counts: BTreeMap<Class, (usize, usize)>,
    /// Benign requests refused, with the first reason.
    pub false_positives: Vec<String>,
    /// Attacks let through.
    pub missed: Vec<String>,
    /// Shape-fitting injections refused, with the first reason.
    pub caught_fitting: Vec<String>,
}

impl Tally {
    /// Adds `from`'s counts and lists to this tally (a run over several services).
    pub fn merge(&mut self, from: Tally) {
        for (c, (n, r)) in from.counts {
            let e = self.counts.entry(c).or_default();
            e.0 += n;
            e.1 += r;
        }
        self.false_positives.extend(from.false_positives);
        self.missed.extend(from.missed);
        self.caught_fitting.extend(from.caught_fitting);
    }

    pub fn add(&mut self, sample: &Sample, refused: bool, reason: Option<String>) {
        let e = self.counts.entry(sample.class).or_default();
        e.0 += 1;
        e.1 += usize::from(refused);
        let benign = matches!(sample.class, Class::Benign | Class::NewOrdinary);
        if benign && refused {
            self.false_positives.push(format!(
                "{} {:?} {}: {}",
                sample.service,
                sample.class,
                sample.what,
                reason.clone().unwrap_or_default()
            ));
        } else if sample.class == Class::ShapeFit && refused {
            self.caught_fitting.push(format!(
                "{} {}: {}",
                sample.service,
                sample.what,
                reason.clone().unwrap_or_default()
            ));
        }
        if !benign && !refused {
            self.missed.push(format!(
                "{} {:?} {}",
                sample.service, sample.class, sample.what
            ));
        }
    }

    /// The share refused of `class`, 0..=1 (the short-form test asserts on it).
    #[allow(dead_code)]
    pub fn rate(&self, class: Class) -> f64 {
        let (n, r) = self.counts.get(&class).copied().unwrap_or_default();
        if n == 0 {
            0.0
        } else {
            r as f64 / n as f64
        }
    }

    /// All classic attacks together.
    pub fn attack_rate(&self) -> (usize, usize) {
        self.counts
            .iter()
            .filter(|(c, _)| matches!(c, Class::Attack(_)))
            .fold((0, 0), |(n, r), (_, (a, b))| (n + a, r + b))
    }
}

fn refused(status: u16) -> bool {
    !(200..400).contains(&status)
}

/// Learns one service's training set through a gate, switches it to block and sends the rest.
pub fn through_gate(samples: &[Sample]) -> Result<(Tally, Profile)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let up = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let up_addr = up.local_addr()?;
    rt.spawn(upstream(up));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GateEvent>(1 << 16);
    let config = GateConfig {
        service: "eval".into(),
        mode: Mode::Learn,
        auto_alert: None,
        alert_window: Duration::ZERO,
        ..GateConfig::default()
    };
    let gate = Gate::new(config, SharedProfile::new(Profile::default()), Arc::new(tx));
    let serving = gate.clone();
    rt.spawn(async move { serving.serve(listener, up_addr).await });
    let mut tally = Tally::default();
    let mut client = Client::new(addr);
    for s in samples.iter().filter(|s| s.class == Class::Train) {
        client.status(&s.req.to_bytes(host_of(s.service)))?;
    }
    gate.set_mode(Mode::Block);
    for s in samples.iter().filter(|s| s.class != Class::Train) {
        let status = client.status(&s.req.to_bytes(host_of(s.service)))?;
        let mut reason = None;
        // Events go out before the answer; a refusal by the parser is reported when its
        // connection ends, so wait a moment for those.
        for _ in 0..20 {
            match rx.try_recv() {
                Ok(e) => {
                    reason = Some(e.reasons.join(" | "));
                    while rx.try_recv().is_ok() {}
                    break;
                }
                Err(_) if refused(status) && status != 403 => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => break,
            }
        }
        tally.add(s, refused(status), reason);
    }
    let profile = gate.profile().snapshot();
    Ok((tally, profile))
}

/// Sends the test sets (not the training set) through a proxy at `proxy` (ModSecurity with
/// CRS) in front of an upstream served here on `upstream_addr`.
pub fn through_proxy(
    samples: &[Sample],
    proxy: SocketAddr,
    upstream_addr: SocketAddr,
) -> Result<Tally> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let up = rt
        .block_on(tokio::net::TcpListener::bind(upstream_addr))
        .with_context(|| format!("bind upstream {upstream_addr}"))?;
    rt.spawn(upstream(up));
    let mut client = Client::new(proxy);
    let mut tally = Tally::default();
    for s in samples.iter().filter(|s| s.class != Class::Train) {
        let status = client.status(&s.req.to_bytes(host_of(s.service)))?;
        tally.add(s, refused(status), Some(format!("status {status}")));
    }
    Ok(tally)
}
