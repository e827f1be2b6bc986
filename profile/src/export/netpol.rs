//! The NetworkPolicy export (`networking.k8s.io/v1`): the workload's pods, selected by the
//! labels passed in, may receive on the learned listening ports (from any source) and send to
//! the learned peers (`ipBlock` CIDRs) on the learned ports; nothing else, in either direction.
//!
//! NetworkPolicy speaks TCP, UDP and SCTP ports only: peers and listeners learned on ICMP or
//! raw sockets cannot be expressed and are listed in the export's notes. Peers are the
//! addresses the workload connected to; a Service's cluster IP is translated to its pods'
//! addresses before most network plugins apply egress rules, so such a peer may need the
//! pods' CIDR instead (the notes name every peer in the service range given).

use std::collections::BTreeMap;

use palisade_policy::Protocol;
use serde::{Deserialize, Serialize};

use super::{check_selector, Export, ExportError};
use crate::fold::Cidr;
use crate::record::Recording;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub pod_selector: LabelSelector,
    pub policy_types: Vec<String>,
    pub ingress: Vec<IngressRule>,
    pub egress: Vec<EgressRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    pub ports: Vec<PolicyPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub to: Vec<PolicyPeer>,
    pub ports: Vec<PolicyPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPeer {
    pub ip_block: IpBlock,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPort {
    pub protocol: String,
    pub port: u16,
}

fn k8s_protocol(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("TCP"),
        Protocol::Udp => Some("UDP"),
        Protocol::Icmp | Protocol::Raw => None,
    }
}

/// Exports the learned network of `rec` as a NetworkPolicy named `name` selecting the pods by
/// `selector`; peers inside `service_range` (the cluster's Service CIDR, if given) are noted.
pub fn network_policy(
    rec: &Recording,
    name: &str,
    selector: &BTreeMap<String, String>,
    service_range: Option<Cidr>,
) -> Result<Export, ExportError> {
    let workload = rec.workload.to_string();
    check_selector(&workload, selector)?;
    let mut notes = rec.promotable().err().unwrap_or_default();

    let mut ports = Vec::new();
    for l in &rec.listening {
        match k8s_protocol(l.protocol) {
            Some(protocol) => ports.push(PolicyPort {
                protocol: protocol.to_string(),
                port: l.port,
            }),
            None => notes.push(format!(
                "listening on {} cannot be expressed in a NetworkPolicy",
                l.protocol.as_str()
            )),
        }
    }
    let ingress = if ports.is_empty() {
        Vec::new()
    } else {
        vec![IngressRule { ports }]
    };

    // One egress rule per port, listing its peers.
    let mut by_port: BTreeMap<PolicyPort, Vec<PolicyPeer>> = BTreeMap::new();
    for peer in &rec.peers {
        let Some(protocol) = k8s_protocol(peer.protocol) else {
            notes.push(format!(
                "{} peer {} cannot be expressed in a NetworkPolicy",
                peer.protocol.as_str(),
                peer.net
            ));
            continue;
        };
        if service_range.is_some_and(|range| range.contains(&peer.net)) {
            notes.push(format!(
                "peer {} port {} is a Service address: egress rules usually see its pods' addresses",
                peer.net, peer.port
            ));
        }
        by_port
            .entry(PolicyPort {
                protocol: protocol.to_string(),
                port: peer.port,
            })
            .or_default()
            .push(PolicyPeer {
                ip_block: IpBlock {
                    cidr: peer.net.to_string(),
                },
            });
    }
    let egress = by_port
        .into_iter()
        .map(|(port, to)| EgressRule {
            to,
            ports: vec![port],
        })
        .collect();

    let policy = NetworkPolicy {
        api_version: "networking.k8s.io/v1".to_string(),
        kind: "NetworkPolicy".to_string(),
        metadata: Metadata {
            name: name.to_string(),
            namespace: rec.workload.namespace.clone(),
            labels: [("palisade.dev/learned".to_string(), "true".to_string())].into(),
        },
        spec: Spec {
            pod_selector: LabelSelector {
                match_labels: selector.clone(),
            },
            policy_types: vec!["Ingress".to_string(), "Egress".to_string()],
            ingress,
            egress,
        },
    };
    let text = serde_yaml::to_string(&policy).map_err(|e| ExportError::Serialize {
        workload,
        reason: e.to_string(),
    })?;
    Ok(Export { text, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::kubearmor::tests::{selector, service};
    use crate::record::Observation;

    #[test]
    fn learned_ports_and_peers() {
        let range: Cidr = "10.96.0.0/12".parse().unwrap();
        let e = network_policy(&service(), "frontend-learned", &selector(), Some(range)).unwrap();
        let p: NetworkPolicy = serde_yaml::from_str(&e.text).unwrap();
        assert_eq!(p.api_version, "networking.k8s.io/v1");
        assert_eq!(p.metadata.namespace, "shop");
        assert_eq!(p.spec.pod_selector.match_labels, selector());
        assert_eq!(p.spec.policy_types, vec!["Ingress", "Egress"]);
        assert_eq!(
            p.spec.ingress,
            vec![IngressRule {
                ports: vec![PolicyPort {
                    protocol: "TCP".into(),
                    port: 8080
                }]
            }]
        );
        let egress: Vec<(String, u16, String)> = p
            .spec
            .egress
            .iter()
            .map(|r| {
                (
                    r.to[0].ip_block.cidr.clone(),
                    r.ports[0].port,
                    r.ports[0].protocol.clone(),
                )
            })
            .collect();
        assert_eq!(
            egress,
            vec![
                ("192.0.2.40/32".to_string(), 443, "TCP".to_string()),
                ("10.96.0.10/32".to_string(), 53, "UDP".to_string()),
            ]
        );
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(e.notes[0].contains("10.96.0.10/32") && e.notes[0].contains("Service"));
    }

    #[test]
    fn folded_networks_and_unexpressible_protocols() {
        let mut r = service();
        for i in 1..=12 {
            r.observe(
                1,
                &Observation::Connect {
                    address: format!("198.51.100.{i}").parse().unwrap(),
                    port: 5432,
                    protocol: Protocol::Tcp,
                },
            );
        }
        r.observe(
            1,
            &Observation::Connect {
                address: "198.51.100.1".parse().unwrap(),
                port: 0,
                protocol: Protocol::Icmp,
            },
        );
        let e = network_policy(&r, "frontend-learned", &selector(), None).unwrap();
        let p: NetworkPolicy = serde_yaml::from_str(&e.text).unwrap();
        let rule = p
            .spec
            .egress
            .iter()
            .find(|r| r.ports[0].port == 5432)
            .unwrap();
        assert_eq!(
            rule.to,
            vec![PolicyPeer {
                ip_block: IpBlock {
                    cidr: "198.51.100.0/24".into()
                }
            }]
        );
        crate::export::assert_noted(&e.notes, "icmp peer 198.51.100.1/32");
    }

    #[test]
    fn nothing_learned_means_nothing_allowed() {
        let r = Recording::new(crate::record::WorkloadId::new("shop", "idle").unwrap());
        let e = network_policy(&r, "idle", &selector(), None).unwrap();
        assert!(
            e.text.contains("ingress: []") && e.text.contains("egress: []"),
            "{}",
            e.text
        );
    }
}

#[cfg(test)]
mod fixture {
    use super::*;
    use crate::export::kubearmor::tests::{selector, service};

    /// `runtimeclass/examples/learned-networkpolicy.yaml` is this export of the test service,
    /// after its comment lines; `cargo xtask manifests` validates it against the Kubernetes
    /// API schemas.
    #[test]
    fn the_validated_example_is_what_the_export_produces() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../runtimeclass/examples/learned-networkpolicy.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = network_policy(&service(), "frontend-learned", &selector(), None).unwrap();
        if std::env::var_os("PALISADE_PRINT_EXAMPLE").is_some() {
            print!("{}", e.text);
        }
        assert_eq!(body, e.text, "regenerate the example from this export");
    }
}
