//! Ranges of compressed counts: lengths, item counts, segment counts, response times.

use serde::{Deserialize, Serialize};

/// At most this many disjoint ranges are kept per count.
pub const MAX_RANGES: usize = 3;

/// Ranges this close (in compressed units) are joined while learning.
const JOIN_GAP: u8 = 2;

/// Compresses a count to one byte: exact below 16, then four steps per doubling, so that
/// the profile can tell 3 from 5 but not 4000 from 4100.
pub fn compress(n: u64) -> u8 {
    if n < 16 {
        return n as u8;
    }
    let log = 63 - n.leading_zeros() as u64;
    let quarter = (n >> (log - 2)) & 3;
    (16 + (log - 4) * 4 + quarter) as u8
}

/// The largest count that compresses to `c`: the inverse of `compress` at the top of a step.
pub fn decompress_max(c: u8) -> u64 {
    if c < 16 {
        return c as u64;
    }
    let log = (c as u64 - 16) / 4 + 4;
    let quarter = (c as u64 - 16) % 4;
    ((4 + quarter + 1) << (log - 2)) - 1
}

/// A small sorted set of disjoint inclusive ranges of compressed counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ranges(Vec<[u8; 2]>);

impl Ranges {
    /// Whether `v` falls in one of the ranges.
    pub fn contains(&self, v: u8) -> bool {
        self.0.iter().any(|[lo, hi]| *lo <= v && v <= *hi)
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The largest value covered, if any.
    pub fn max(&self) -> Option<u8> {
        self.0.last().map(|[_, hi]| *hi)
    }

    /// Whether `v` falls in one of the ranges widened by a margin of a quarter of its width
    /// plus one step. A range at zero is never widened: a value that never had spaces (or
    /// punctuation, or control characters) getting one is exactly what an injection looks like.
    pub fn contains_with_margin(&self, v: u8) -> bool {
        self.0.iter().any(|[lo, hi]| {
            if *hi == 0 {
                return v == 0;
            }
            let margin = 1 + (hi - lo) / 4;
            let floor = if *lo == 0 {
                0
            } else {
                lo.saturating_sub(margin).max(1)
            };
            floor <= v && v <= hi.saturating_add(margin)
        })
    }

    /// Widens the ranges to cover `v`.
    pub fn learn(&mut self, v: u8) {
        if self.contains(v) {
            return;
        }
        self.0.push([v, v]);
        self.normalize();
    }

    /// Widens the ranges to cover everything `other` covers.
    pub fn merge(&mut self, other: &Ranges) {
        self.0.extend_from_slice(&other.0);
        self.normalize();
    }

    /// Restores the invariants (sorted, disjoint, at most `MAX_RANGES`) after any change,
    /// including after loading a document written by hand.
    pub fn normalize(&mut self) {
        for r in &mut self.0 {
            if r[0] > r[1] {
                r.swap(0, 1);
            }
        }
        self.0.sort_unstable();
        let mut joined: Vec<[u8; 2]> = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            match joined.last_mut() {
                Some(last) if r[0] <= last[1].saturating_add(JOIN_GAP) => {
                    last[1] = last[1].max(r[1]);
                }
                _ => joined.push(r),
            }
        }
        while joined.len() > MAX_RANGES {
            // Join the two neighbours with the smallest gap: the least new ground is accepted.
            let mut best = 0;
            for i in 1..joined.len() - 1 {
                if joined[i + 1][0] - joined[i][1] < joined[best + 1][0] - joined[best][1] {
                    best = i;
                }
            }
            let next = joined.remove(best + 1);
            joined[best][1] = next[1];
        }
        self.0 = joined;
    }
}
