//! Pod indicators: signs that the pod itself behaves differently, polled by the shim.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Peers remembered as known; past this, new peers are counted but not listed.
const MAX_KNOWN_PEERS: usize = 4096;
/// New peers listed per poll.
const MAX_LISTED_PEERS: usize = 64;

/// What changed since the last poll.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIndicators {
    /// Peer addresses first seen after learning ended.
    pub new_peers: Vec<IpAddr>,
    /// New peers beyond those listed.
    pub new_peers_unlisted: u64,
    /// Responses slower than any learned.
    pub slow_responses: u64,
    /// Requests handled.
    pub requests: u64,
    /// Requests that broke the rules (alerted or blocked), duplicates included.
    pub violations: u64,
}

/// Accumulates indicators between polls.
#[derive(Debug, Default)]
pub struct IndicatorState {
    known: HashSet<IpAddr>,
    pending: PodIndicators,
}

impl IndicatorState {
    /// Records a request from `peer`; while learning, peers become known silently. Returns
    /// whether `peer` is known now, and so stays known: its next requests can be recorded
    /// with `request_from_known`.
    pub fn request(&mut self, peer: IpAddr, learning: bool) -> bool {
        self.pending.requests += 1;
        if self.known.contains(&peer) {
            return true;
        }
        let known = self.known.len() < MAX_KNOWN_PEERS;
        if known {
            self.known.insert(peer);
        }
        if learning {
            return known;
        }
        if self.pending.new_peers.len() < MAX_LISTED_PEERS {
            self.pending.new_peers.push(peer);
        } else {
            self.pending.new_peers_unlisted += 1;
        }
        known
    }

    /// Records a request from a peer `request` said is known (peers are never forgotten).
    pub fn request_from_known(&mut self) {
        self.pending.requests += 1;
    }

    /// Records a response slower than learned.
    pub fn slow_response(&mut self) {
        self.pending.slow_responses += 1;
    }

    /// Records a request that broke the rules.
    pub fn violation(&mut self) {
        self.pending.violations += 1;
    }

    /// Returns what accumulated since the last call and starts afresh.
    pub fn take(&mut self) -> PodIndicators {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_peers_are_reported_once_after_learning() {
        let mut s = IndicatorState::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.request(a, true));
        assert!(s.request(a, false));
        assert!(s.request(b, false));
        s.request_from_known();
        s.slow_response();
        let i = s.take();
        assert_eq!(i.new_peers, vec![b]);
        assert_eq!(i.requests, 4);
        assert_eq!(i.slow_responses, 1);
        assert_eq!(s.take(), PodIndicators::default(), "take drains");
    }
}
