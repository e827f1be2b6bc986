//! Value profiles: the character statistics of one value and the learned ranges they must fall in.

use serde::{Deserialize, Serialize};

/// ASCII punctuation in bit order: a character's index here is its bit in a punctuation bitmap.
/// There are exactly 32, so one `u32` says which of them a value (or a learned profile) uses.
const PUNCTUATION: &[u8; 32] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Markers that rarely belong in data but often in injected code; one bit each in `flags`.
const MARKERS: [(&str, &str); 5] = [
    ("/*", "comment marker '/*'"),
    ("*/", "comment marker '*/'"),
    ("--", "comment marker '--'"),
    ("0x", "hex prefix '0x'"),
    ("\\x", "hex prefix '\\x'"),
];

/// The coarse Unicode range of a non-ASCII character, one bit each: the 256-code-point pages
/// U+0080..U+1DFF (Latin-1, Latin Extended, Greek, Cyrillic, Hebrew, Arabic, Indic, ...) are
/// bits 0 to 29; general punctuation and symbols U+2000..U+2BFF, where the invisible and
/// direction-changing characters live, are bit 30; everything else (CJK, emoji, ...) is bit 31.
fn unicode_bit(c: char) -> u32 {
    let cp = c as u32;
    match cp {
        0x80..=0x1DFF => cp >> 8,
        0x2000..=0x2BFF => 30,
        _ => 31,
    }
}

fn unicode_range_name(bit: u32) -> String {
    match bit {
        0 => "U+0080..U+00FF".to_string(),
        1..=29 => format!("U+{:04X}..U+{:04X}", bit << 8, (bit << 8) + 0xFF),
        30 => "U+2000..U+2BFF".to_string(),
        _ => "outside U+0080..U+2BFF".to_string(),
    }
}

/// At most this many disjoint ranges are kept per count: enough to learn "empty or 8 to 12"
/// without letting the ranges grow into a list of every value seen.
pub const MAX_RANGES: usize = 3;

/// Ranges this close (in compressed units) are joined while learning, so that a handful of
/// samples already yields a usable range rather than a set of points.
const JOIN_GAP: u8 = 2;

/// The counts kept per value, in the order of `ValueSample::counts`.
const COUNT_NAMES: [&str; 7] = [
    "digits",
    "letters",
    "spaces",
    "special characters",
    "non-printable characters",
    "non-ascii characters",
    "character class changes",
];

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

/// The character statistics of one value, computed once per value per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueSample {
    /// Raw counts in the order of `COUNT_NAMES`.
    pub counts: [u64; 7],
    /// Bit `i` set when `PUNCTUATION[i]` occurs.
    pub punctuation: u32,
    /// Bit `i` set when `MARKERS[i]` occurs.
    pub flags: u8,
    /// Coarse Unicode ranges of the non-ASCII characters (see `unicode_bit`).
    pub unicode: u32,
}

/// Index in `ValueSample::counts` of each class of character; also the class of a character.
const DIGIT: u8 = 0;
const LETTER: u8 = 1;
const SPACE: u8 = 2;
const SPECIAL: u8 = 3;
const NON_PRINTABLE: u8 = 4;
const NON_ASCII: u8 = 5;

/// Set in `ASCII_CLASS` for the bytes that end a two-byte marker (`*`, `/`, `-`, `x`, `X`):
/// only after those is the pair looked at.
const MARKER_END: u8 = 8;

/// Class of each ASCII byte (and `MARKER_END`), in a table so that the per-character work of
/// a value is a load or two.
const ASCII_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_alphabetic() {
            LETTER
        } else if c == b' ' || c == b'\t' {
            SPACE
        } else if c.is_ascii_punctuation() {
            SPECIAL
        } else {
            NON_PRINTABLE
        };
        if matches!(c, b'*' | b'/' | b'-' | b'x' | b'X') {
            t[b] |= MARKER_END;
        }
        b += 1;
    }
    t
};

/// Bit of each ASCII byte in the punctuation map (zero for bytes that are not punctuation).
const PUNCTUATION_BIT: [u32; 128] = {
    let mut t = [0u32; 128];
    let mut i = 0;
    while i < PUNCTUATION.len() {
        t[PUNCTUATION[i] as usize] = 1 << i;
        i += 1;
    }
    t
};

/// The bit in `flags` of the marker made of bytes `a` then `b` (the order of `MARKERS`),
/// ignoring ASCII case; 0 when the pair is no marker.
fn marker_bit(a: u8, b: u8) -> u8 {
    match (a, b.to_ascii_lowercase()) {
        (b'/', b'*') => 1 << 0,
        (b'*', b'/') => 1 << 1,
        (b'-', b'-') => 1 << 2,
        (b'0', b'x') => 1 << 3,
        (b'\\', b'x') => 1 << 4,
        _ => 0,
    }
}

impl ValueSample {
    /// Computes the statistics of `value`.
    pub fn of(value: &str) -> Self {
        let bytes = value.as_bytes();
        // Indexed by class; one spare slot so that `class & 7` needs no bounds check.
        let mut counts = [0u64; 8];
        let (mut punctuation, mut flags, mut unicode) = (0u32, 0u8, 0u32);
        let mut changes = 0u64;
        let mut previous = u8::MAX;
        // Byte before this one, for the two-byte markers; a non-ASCII character ends in a byte
        // that is no part of any marker.
        let mut before = 0u8;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let class = if b < 0x80 {
                let entry = ASCII_CLASS[b as usize];
                punctuation |= PUNCTUATION_BIT[b as usize];
                if entry & MARKER_END != 0 {
                    flags |= marker_bit(before, b);
                }
                before = b;
                i += 1;
                entry & 7
            } else {
                // `value` is a str: a byte of 0x80 or more starts a whole character here.
                let c = value[i..]
                    .chars()
                    .next()
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                unicode |= 1 << unicode_bit(c);
                before = 0;
                i += c.len_utf8();
                NON_ASCII
            };
            counts[usize::from(class & 7)] += 1;
            changes += u64::from(previous != class);
            previous = class;
        }
        // The first character is no change of class.
        changes = changes.saturating_sub(1);
        ValueSample {
            counts: [
                counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], changes,
            ],
            punctuation,
            flags,
            unicode,
        }
    }
}

/// The learned rule for one value: a range per count, the punctuation seen, the markers seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueProfile {
    #[serde(rename = "c")]
    counts: [Ranges; 7],
    #[serde(rename = "p", default, skip_serializing_if = "is_zero_u32")]
    punctuation: u32,
    #[serde(rename = "f", default, skip_serializing_if = "is_zero_u8")]
    flags: u8,
    #[serde(rename = "u", default, skip_serializing_if = "is_zero_u32")]
    unicode: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

impl ValueProfile {
    /// Widens the profile to accept `sample`.
    pub fn learn(&mut self, sample: &ValueSample) {
        for (ranges, n) in self.counts.iter_mut().zip(sample.counts) {
            ranges.learn(compress(n));
        }
        self.punctuation |= sample.punctuation;
        self.flags |= sample.flags;
        self.unicode |= sample.unicode;
    }

    /// Widens the profile to accept whatever `other` accepts.
    pub fn merge(&mut self, other: &ValueProfile) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            mine.merge(theirs);
        }
        self.punctuation |= other.punctuation;
        self.flags |= other.flags;
        self.unicode |= other.unicode;
    }

    /// Whether `sample` breaks no rule of the profile: `check` would give no reason. Cheaper
    /// than `check`, which names what it finds.
    pub fn accepts(&self, sample: &ValueSample) -> bool {
        sample.punctuation & !self.punctuation == 0
            && sample.flags & !self.flags == 0
            && sample.unicode & !self.unicode == 0
            && self
                .counts
                .iter()
                .zip(sample.counts)
                .all(|(ranges, n)| n == 0 || ranges.contains_with_margin(compress(n)))
    }

    /// Appends one reason per way `sample` breaks the profile, each prefixed with `at`.
    pub fn check(&self, sample: &ValueSample, at: &str, reasons: &mut Vec<String>) {
        for ((ranges, n), name) in self.counts.iter().zip(sample.counts).zip(COUNT_NAMES) {
            // A class that is absent never breaks a rule: random tokens are sometimes all
            // digits, and an exploit is made of characters, not of their absence.
            if n != 0 && !ranges.contains_with_margin(compress(n)) {
                reasons.push(format!("{at}: {n} {name} outside learned range"));
            }
        }
        let new_punctuation = sample.punctuation & !self.punctuation;
        for (bit, p) in PUNCTUATION.iter().enumerate() {
            if new_punctuation & (1 << bit) != 0 {
                reasons.push(format!("{at}: new punctuation '{}'", *p as char));
            }
        }
        let new_flags = sample.flags & !self.flags;
        for (bit, (_, name)) in MARKERS.iter().enumerate() {
            if new_flags & (1 << bit) != 0 {
                reasons.push(format!("{at}: new {name}"));
            }
        }
        let new_unicode = sample.unicode & !self.unicode;
        for bit in 0..32 {
            if new_unicode & (1 << bit) != 0 {
                reasons.push(format!(
                    "{at}: new unicode range {}",
                    unicode_range_name(bit)
                ));
            }
        }
    }

    pub(crate) fn normalize(&mut self) {
        for r in &mut self.counts {
            r.normalize();
        }
        self.flags &= (1 << MARKERS.len()) - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(profile: &ValueProfile, value: &str) -> Vec<String> {
        let mut reasons = Vec::new();
        profile.check(&ValueSample::of(value), "v", &mut reasons);
        reasons
    }

    fn learned(values: &[&str]) -> ValueProfile {
        let mut p = ValueProfile::default();
        for v in values {
            p.learn(&ValueSample::of(v));
        }
        p
    }

    /// The statistics computed character by character, as plainly as they are defined: the
    /// table-driven `ValueSample::of` must agree with it on every value.
    fn reference_sample(value: &str) -> ValueSample {
        let mut s = ValueSample::default();
        let mut previous = None;
        for c in value.chars() {
            let class = if c.is_ascii_digit() {
                0
            } else if c.is_ascii_alphabetic() {
                1
            } else if c == ' ' || c == '\t' {
                2
            } else if c.is_ascii_punctuation() {
                3
            } else if c.is_ascii() {
                4
            } else {
                5
            };
            s.counts[class] += 1;
            if class == 5 {
                s.unicode |= 1 << unicode_bit(c);
            }
            if let Some(bit) = PUNCTUATION.iter().position(|p| *p as char == c) {
                s.punctuation |= 1 << bit;
            }
            if previous.is_some_and(|p| p != class) {
                s.counts[6] += 1;
            }
            previous = Some(class);
        }
        // Markers were looked for only in values with punctuation, a '0' or a backslash.
        if s.punctuation != 0 || value.contains(['0', '\\']) {
            let lower = value.to_ascii_lowercase();
            for (bit, (marker, _)) in MARKERS.iter().enumerate() {
                if lower.contains(marker) {
                    s.flags |= 1 << bit;
                }
            }
        }
        s
    }

    #[test]
    fn samples_match_the_plain_definition() {
        let fixed = [
            "",
            "a",
            "red shoes",
            "x' OR 1=1 --",
            "/*comment*/",
            "0X1f \\X41 \\x",
            "*/-/*-",
            "a\tb\u{0}c\u{7f}",
            "café-é--é0xé",
            "c\u{430}f\u{202E}\u{1F600}é",
            "é/é*é",
            "1990-01-01T00:00:00Z",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ];
        for v in fixed {
            assert_eq!(ValueSample::of(v), reference_sample(v), "{v:?}");
        }
        // Every pair of characters from a mixed alphabet, and longer generated strings.
        let alphabet: Vec<char> = "aZ09 \t\u{1}\u{7f}!/*-x\\0Xé\u{430}\u{2028}\u{1F600}"
            .chars()
            .collect();
        for a in &alphabet {
            for b in &alphabet {
                let v: String = [*a, *b].iter().collect();
                assert_eq!(ValueSample::of(&v), reference_sample(&v), "{v:?}");
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut v = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 24) {
                let i = ((x >> (k * 2)) ^ (x >> 40)) as usize % alphabet.len();
                v.push(alphabet[i]);
            }
            assert_eq!(ValueSample::of(&v), reference_sample(&v), "{v:?}");
        }
    }

    #[test]
    fn accepts_agrees_with_check() {
        let profiles = [
            learned(&["abc12", "abcd123", "ab1"]),
            learned(&["a-b*c/d", "12-3", "café"]),
            learned(&["", "x"]),
            ValueProfile::default(),
        ];
        let values = [
            "",
            "abc",
            "abcd12",
            "a$b",
            "a/*b",
            "0x1",
            "ab 12",
            "crème",
            "c\u{430}fé",
            "12-3",
            "a-b*c/d",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "x",
        ];
        for (i, p) in profiles.iter().enumerate() {
            for v in values {
                assert_eq!(
                    p.accepts(&ValueSample::of(v)),
                    check(p, v).is_empty(),
                    "profile {i}, value {v:?}"
                );
            }
        }
    }

    #[test]
    fn counts_each_class() {
        let s = ValueSample::of("ab1 2\u{1}é-");
        assert_eq!(s.counts[0], 2, "digits");
        assert_eq!(s.counts[1], 2, "letters");
        assert_eq!(s.counts[2], 1, "spaces");
        assert_eq!(s.counts[3], 1, "special");
        assert_eq!(s.counts[4], 1, "non-printable");
        assert_eq!(s.counts[5], 1, "non-ascii");
        // a b | 1 | ' ' | 2 | \x01 | é | -  => 6 changes
        assert_eq!(s.counts[6], 6, "class changes");
    }

    #[test]
    fn compress_is_exact_then_logarithmic() {
        assert_eq!(compress(0), 0);
        assert_eq!(compress(15), 15);
        assert_eq!(compress(16), 16);
        assert_eq!(compress(20), 17);
        assert_eq!(compress(32), 20);
        assert!(compress(4000) == compress(4001));
        assert!(compress(u64::MAX) > compress(1 << 40));
        for n in [0, 7, 15, 16, 19, 20, 33, 1000, 4095, 4096, 1 << 40] {
            let c = compress(n);
            assert!(decompress_max(c) >= n, "{n}");
            assert_eq!(compress(decompress_max(c)), c, "{n}");
            assert_eq!(compress(decompress_max(c) + 1), c + 1, "{n}");
        }
    }

    #[test]
    fn each_count_outside_range_is_a_reason() {
        let p = learned(&["abc12", "abcd123", "ab1"]);
        assert!(check(&p, "abcd12").is_empty(), "within ranges");
        let r = check(&p, &"a".repeat(40));
        assert!(
            r.iter().any(|r| r == "v: 40 letters outside learned range"),
            "{r:?}"
        );
        assert!(
            !r.iter().any(|r| r.contains("digits")),
            "absent digits pass: {r:?}"
        );
        assert!(check(&p, "ab 12").iter().any(|r| r.contains("1 spaces")));
        assert!(check(&p, "ab\u{0}12")
            .iter()
            .any(|r| r.contains("non-printable")));
        assert!(check(&p, "abé12").iter().any(|r| r.contains("non-ascii")));
        let r = check(&p, "a1b2c3d4e5");
        assert!(
            r.iter().any(|r| r.contains("character class changes")),
            "{r:?}"
        );
    }

    #[test]
    fn margin_widens_nonzero_ranges_only() {
        let mut r = Ranges::default();
        r.learn(0);
        assert!(!r.contains_with_margin(1), "zero stays strict");
        let mut r = Ranges::default();
        for v in [8, 10, 12, 16] {
            r.learn(v);
        }
        // [8,12] and [16,16]: margins 2 and 1
        assert!(
            r.contains_with_margin(6) && r.contains_with_margin(14) && r.contains_with_margin(17)
        );
        assert!(!r.contains_with_margin(5) && !r.contains_with_margin(18));
        let mut r = Ranges::default();
        r.learn(1);
        assert!(
            !r.contains_with_margin(0),
            "a learned non-zero count never widens to zero"
        );
    }

    #[test]
    fn new_punctuation_class_is_named() {
        let p = learned(&["a-b", "c_d.e"]);
        assert!(check(&p, "x.y-z").is_empty());
        let r = check(&p, "a$b");
        assert_eq!(r, vec!["v: new punctuation '$'".to_string()]);
    }

    #[test]
    fn comment_markers_and_hex_prefixes_are_flagged() {
        let p = learned(&["a-b*c/d", "12-3"]);
        let r = check(&p, "a/*b");
        assert!(
            r.contains(&"v: new comment marker '/*'".to_string()),
            "{r:?}"
        );
        let r = check(&p, "a*/b");
        assert!(
            r.contains(&"v: new comment marker '*/'".to_string()),
            "{r:?}"
        );
        let r = check(&p, "ab--");
        assert!(
            r.contains(&"v: new comment marker '--'".to_string()),
            "{r:?}"
        );
        let r = check(&p, "0X1f");
        assert!(r.contains(&"v: new hex prefix '0x'".to_string()), "{r:?}");
        let p = learned(&["a\\b"]);
        let r = check(&p, "\\x41");
        assert!(r.contains(&"v: new hex prefix '\\x'".to_string()), "{r:?}");
    }

    #[test]
    fn new_unicode_ranges_are_named() {
        let p = learned(&["café", "naïve", "Zoë"]);
        assert!(check(&p, "crème").is_empty(), "Latin-1 was learned");
        // A Cyrillic 'а' posing as a Latin 'a'.
        let r = check(&p, "c\u{430}fé");
        assert!(
            r.contains(&"v: new unicode range U+0400..U+04FF".to_string()),
            "{r:?}"
        );
        // A right-to-left override hiding a file extension.
        let r = check(&p, "caf\u{202E}é");
        assert!(
            r.contains(&"v: new unicode range U+2000..U+2BFF".to_string()),
            "{r:?}"
        );
        let r = check(&p, "caf\u{1F600}");
        assert!(
            r.contains(&"v: new unicode range outside U+0080..U+2BFF".to_string()),
            "{r:?}"
        );
    }

    #[test]
    fn ranges_stay_bounded_and_join_near_values() {
        let mut r = Ranges::default();
        for v in [1, 2, 4] {
            r.learn(v);
        }
        assert_eq!(r.0, vec![[1, 4]], "near values join");
        for v in [20, 40, 60, 80, 100] {
            r.learn(v);
        }
        assert_eq!(r.0.len(), MAX_RANGES);
        for v in [1, 4, 20, 40, 60, 80, 100] {
            assert!(r.contains(v), "{v} still covered by {:?}", r.0);
        }
        assert!(!r.contains(120));
    }

    #[test]
    fn merge_accepts_both_sides() {
        let mut a = learned(&["abc"]);
        let b = learned(&["12-34"]);
        a.merge(&b);
        assert!(check(&a, "abc").is_empty());
        assert!(check(&a, "12-34").is_empty());
    }
}
