//! Field models: what kind of value a field (query key, header, JSON leaf, form field, path
//! position) holds, learned from its values, and the rules a new value must keep. A value
//! breaks them when it does not fit the field's kind, not when it is merely new: letters and
//! digits of any script are letters and digits, punctuation is learned per field with a
//! tolerance a free-text field earns from the variety it has seen, and what a value does in
//! the grammars attackers target (`grammar`) is learned beside its shape.

use serde::{Deserialize, Serialize};

use crate::grammar;
pub use crate::ranges::{compress, decompress_max, Ranges};

/// ASCII punctuation in bit order: a character's index here is its bit in a punctuation bitmap.
const PUNCTUATION: &[u8; 32] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Punctuation that ordinary text carries: a free-text field that has seen enough variety
/// accepts it even when new, and leaves the rest to the grammars. Never in it: `< > { } $ |
/// \ ^ = `` ` ``, the characters of markup, templates, lookups and shell.
const PROSE: &[u8] = b"!\"#%&'()*+,-./:;?@[]_~";

/// Punctuation that joins the parts of a name (`price_desc`, `j.smith`, `Jean-Luc`): an
/// identifier field accepts it even when new.
const JOINERS: &[u8] = b"-._";

const fn bits_of(chars: &[u8]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < chars.len() {
        let mut j = 0;
        while j < PUNCTUATION.len() {
            if PUNCTUATION[j] == chars[i] {
                bits |= 1 << j;
            }
            j += 1;
        }
        i += 1;
    }
    bits
}

const PROSE_BITS: u32 = bits_of(PROSE);

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
const JOINER_BITS: u32 = bits_of(JOINERS);
/// What an ASCII byte is to `ValueSample::of`: one of the `A_` classes.
const ASCII_CLASS: [u8; 128] = {
    let mut t = [A_CONTROL; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            A_DIGIT
        } else if c.is_ascii_punctuation() {
            A_PUNCTUATION
        } else if c == b' ' || c == b'\t' {
            A_SPACE
        } else if c.is_ascii_alphabetic() {
            A_LETTER
        } else {
            A_CONTROL
        };
        b += 1;
    }
    t
};
const A_DIGIT: u8 = 0;
const A_PUNCTUATION: u8 = 1;
const A_SPACE: u8 = 2;
const A_CONTROL: u8 = 3;
const A_LETTER: u8 = 4;

/// Punctuation an identifier may hold besides letters and digits.
const IDENT_BITS: u32 = bits_of(b"-._~:+=@");

/// Markers that rarely belong in a name or a number but often in injected code; one bit each.
const MARKERS: [(&str, &str); 5] = [
    ("/*", "comment marker '/*'"),
    ("*/", "comment marker '*/'"),
    ("--", "comment marker '--'"),
    ("0x", "hex prefix '0x'"),
    ("\\x", "hex prefix '\\x'"),
];

/// Kinds of value, one bit each; a value has its narrowest kind and every wider one.
pub const INTEGER: u8 = 1 << 0;
pub const DECIMAL: u8 = 1 << 1;
pub const UUID: u8 = 1 << 2;
pub const EMAIL: u8 = 1 << 3;
pub const DATE: u8 = 1 << 4;
pub const IDENTIFIER: u8 = 1 << 5;
pub const TEXT: u8 = 1 << 6;
/// Kinds whose own grammar says which characters they hold.
const TYPED: u8 = INTEGER | DECIMAL | UUID | EMAIL | DATE;

const KIND_NAMES: [&str; 7] = [
    "integer",
    "decimal",
    "uuid",
    "email",
    "date/time",
    "identifier",
    "free text",
];

/// `integer or identifier`: the kinds in `bits`, widest last.
pub fn kind_names(bits: u8) -> String {
    let names: Vec<&str> = KIND_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(" or ")
    }
}

/// Classes of character beyond letters, digits and ASCII punctuation, one bit each.
const CONTROL: u8 = 1 << 0;
const INVISIBLE: u8 = 1 << 1;
const SYMBOL: u8 = 1 << 2;
const SPACE: u8 = 1 << 3;
const CLASS_NAMES: [&str; 4] = [
    "control character",
    "invisible or direction-changing character",
    "non-ascii symbol",
    "space",
];

/// Zero-width, joiner, direction and byte-order characters: they hide or reorder text.
fn is_invisible(c: char) -> bool {
    matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xFEFF | 0xAD)
}

/// Distinct values remembered per field: past this many the field is varied, not an enum.
pub const DISTINCT: usize = 16;
/// Distinct values a free-text field must have shown to earn the prose tolerance.
pub const VARIED: usize = 6;

/// What one value is, computed once per value per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueSample {
    /// Its narrowest kind and every wider one.
    pub kinds: u8,
    /// Characters.
    pub len: u32,
    /// Bit `i` set when `PUNCTUATION[i]` occurs.
    pub punctuation: u32,
    /// Bit `i` set when `MARKERS[i]` occurs.
    pub flags: u8,
    /// Classes of other characters (controls, invisible, symbols, spaces).
    pub classes: u8,
    /// Structures in the attacked grammars (`grammar::NAMES`).
    pub grammar: u32,
    /// Hash of the value, for counting distinct values.
    pub hash: u32,
}

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

fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._%+-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    local_ok
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.chars().all(char::is_alphabetic))
}

fn is_date(v: &str, digits: u32) -> bool {
    let b = v.as_bytes();
    let separators = b.iter().filter(|c| matches!(c, b'-' | b':' | b'/')).count();
    b.first().is_some_and(u8::is_ascii_digit)
        && digits >= 4
        && separators >= 2
        && b.len() <= 35
        && b.iter().all(|c| {
            c.is_ascii_digit() || matches!(c, b'-' | b':' | b'/' | b'.' | b'T' | b'Z' | b'+' | b' ')
        })
}

fn is_decimal(v: &str) -> bool {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    let mut parts = body.splitn(2, ['.', ',']);
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|c| c.is_ascii_digit())
        && frac.is_some_and(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
}

impl ValueSample {
    /// What `value` is.
    pub fn of(value: &str) -> Self {
        let (mut punctuation, mut flags, mut classes) = (0u32, 0u8, 0u8);
        let (mut digits, mut len, mut other) = (0u32, 0u32, false);
        let mut hash: u32 = 0x811C_9DC5;
        let mut before = 0u8;
        let bytes = value.as_bytes();
        let mut i = 0;
        // By bytes, decoding a character only where one does not fit in a byte: most values
        // are ASCII.
        while let Some(&b) = bytes.get(i) {
            len += 1;
            if b.is_ascii() {
                i += 1;
                hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
                match ASCII_CLASS[usize::from(b)] {
                    A_DIGIT => digits += 1,
                    A_PUNCTUATION => {
                        punctuation |= PUNCTUATION_BIT[usize::from(b)];
                        flags |= marker_bit(before, b);
                    }
                    A_SPACE => classes |= SPACE,
                    A_CONTROL => classes |= CONTROL,
                    _ => flags |= marker_bit(before, b),
                }
                before = b;
                continue;
            }
            let Some(c) = value.get(i..).and_then(|rest| rest.chars().next()) else {
                break;
            };
            i += c.len_utf8();
            hash = (hash ^ c as u32).wrapping_mul(0x0100_0193);
            before = 0;
            if c.is_alphabetic() || ('\u{300}'..='\u{36F}').contains(&c) {
                continue;
            }
            if c.is_numeric() {
                digits += 1;
            } else if is_invisible(c) {
                classes |= INVISIBLE;
            } else if c.is_control() {
                classes |= CONTROL;
            } else if c.is_whitespace() {
                classes |= SPACE;
            } else {
                classes |= SYMBOL;
                other = true;
            }
        }
        let mut kinds = TEXT;
        let ident = len > 0 && classes == 0 && !other && punctuation & !IDENT_BITS == 0;
        if ident {
            kinds |= IDENTIFIER;
        }
        if len > 0 && digits == len {
            kinds |= INTEGER | DECIMAL;
        } else if value.len() < 64 {
            if is_decimal(value) {
                kinds |= DECIMAL;
            }
            if ident && is_uuid(value) {
                kinds |= UUID;
            }
            if is_date(value, digits) {
                kinds |= DATE;
            }
            // `@` is punctuation: its bit says whether the value has one.
            if ident && punctuation & PUNCTUATION_BIT[usize::from(b'@')] != 0 && is_email(value) {
                kinds |= EMAIL;
            }
        }
        ValueSample {
            kinds,
            len,
            punctuation,
            flags,
            classes,
            grammar: grammar::structures(value),
            hash,
        }
    }

    /// The narrowest kind of the value (learned).
    fn narrowest(&self) -> u8 {
        for k in [INTEGER, DECIMAL, UUID, EMAIL, DATE, IDENTIFIER] {
            if self.kinds & k != 0 {
                return k;
            }
        }
        TEXT
    }
}

/// The learned model of one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueProfile {
    /// Narrowest kinds of the non-empty values learned.
    #[serde(rename = "k", default)]
    kinds: u8,
    /// Values learned (saturating).
    #[serde(rename = "n", default)]
    seen: u32,
    /// Hashes of up to `DISTINCT` distinct values, sorted.
    #[serde(rename = "d", default, skip_serializing_if = "Vec::is_empty")]
    distinct: Vec<u32>,
    /// Longest value learned, in characters.
    #[serde(rename = "l", default)]
    max_len: u32,
    #[serde(rename = "p", default, skip_serializing_if = "is_zero_u32")]
    punctuation: u32,
    #[serde(rename = "f", default, skip_serializing_if = "is_zero_u8")]
    flags: u8,
    #[serde(rename = "c", default, skip_serializing_if = "is_zero_u8")]
    classes: u8,
    #[serde(rename = "g", default, skip_serializing_if = "is_zero_u32")]
    grammar: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

/// How a value breaks a field model; empty when it fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Breaks {
    kind: bool,
    too_long: bool,
    punctuation: u32,
    flags: u8,
    classes: u8,
    grammar: u32,
}

impl Breaks {
    fn any(&self) -> bool {
        *self != Breaks::default()
    }
}

impl ValueProfile {
    /// Widens the model to accept `sample`.
    pub fn learn(&mut self, s: &ValueSample) {
        self.seen = self.seen.saturating_add(1);
        if s.len == 0 {
            return;
        }
        self.kinds |= s.narrowest();
        self.max_len = self.max_len.max(s.len);
        self.punctuation |= s.punctuation;
        self.flags |= s.flags;
        self.classes |= s.classes;
        self.grammar |= s.grammar;
        if self.distinct.len() < DISTINCT {
            if let Err(at) = self.distinct.binary_search(&s.hash) {
                self.distinct.insert(at, s.hash);
            }
        }
    }

    /// Widens the model to accept whatever `other` accepts.
    pub fn merge(&mut self, other: &ValueProfile) {
        self.seen = self.seen.saturating_add(other.seen);
        self.kinds |= other.kinds;
        self.max_len = self.max_len.max(other.max_len);
        self.punctuation |= other.punctuation;
        self.flags |= other.flags;
        self.classes |= other.classes;
        self.grammar |= other.grammar;
        self.distinct.extend_from_slice(&other.distinct);
        self.normalize();
    }

    /// Values learned.
    pub fn seen(&self) -> u32 {
        self.seen
    }

    /// Whether the field holds free text and has seen enough distinct values to earn the
    /// prose tolerance.
    pub fn is_varied_text(&self) -> bool {
        self.kinds & TEXT != 0 && self.distinct.len() >= VARIED
    }

    /// The kind of the field as reasons name it: its kinds, or `enum` when few distinct
    /// values were seen many times.
    pub fn kind(&self) -> String {
        let names = kind_names(self.kinds);
        if self.seen >= 30 && self.distinct.len() <= 8 && self.kinds & (TEXT | TYPED) == 0 {
            format!("enum of {} values ({names})", self.distinct.len())
        } else {
            names
        }
    }

    /// The longest value accepted: half as long again as the longest learned plus some slack,
    /// twice as long for free text.
    fn length_limit(&self) -> u32 {
        if self.kinds & TEXT != 0 {
            self.max_len.saturating_mul(2).saturating_add(32)
        } else {
            self.max_len
                .saturating_add(self.max_len / 2)
                .saturating_add(16)
        }
    }

    fn breaks(&self, s: &ValueSample) -> Breaks {
        let mut b = Breaks::default();
        if s.len == 0 {
            return b;
        }
        if s.kinds & self.kinds == 0 {
            b.kind = true;
        }
        b.too_long = s.len > self.length_limit();
        // A value of a typed kind the field learned is judged by that kind's own grammar.
        if s.kinds & self.kinds & TYPED != 0 {
            return b;
        }
        let varied_text = self.is_varied_text();
        let mut tolerated = self.punctuation;
        if varied_text {
            tolerated |= PROSE_BITS;
        } else if self.kinds & IDENTIFIER != 0 {
            tolerated |= JOINER_BITS;
        }
        b.punctuation = s.punctuation & !tolerated;
        if !varied_text {
            b.flags = s.flags & !self.flags;
        }
        let mut classes = s.classes & !self.classes & !SPACE;
        if varied_text {
            classes &= !SYMBOL;
        }
        b.classes = classes;
        b.grammar = s.grammar & !self.grammar;
        b
    }

    /// Whether `sample` fits the field: `check` would give no reason.
    pub fn accepts(&self, sample: &ValueSample) -> bool {
        !self.breaks(sample).any()
    }

    /// Appends one reason per way `sample` breaks the field model, each prefixed with `at`.
    pub fn check(&self, s: &ValueSample, at: &str, reasons: &mut Vec<String>) {
        let b = self.breaks(s);
        if b.kind {
            reasons.push(format!(
                "{at}: {} value where {} was learned",
                kind_names(s.narrowest()),
                self.kind()
            ));
        }
        if b.too_long {
            reasons.push(format!(
                "{at}: {} characters, learned at most {}",
                s.len, self.max_len
            ));
        }
        for (bit, p) in PUNCTUATION.iter().enumerate() {
            if b.punctuation & (1 << bit) != 0 {
                reasons.push(format!("{at}: new punctuation '{}'", *p as char));
            }
        }
        for (bit, (_, name)) in MARKERS.iter().enumerate() {
            if b.flags & (1 << bit) != 0 {
                reasons.push(format!("{at}: new {name}"));
            }
        }
        for (bit, name) in CLASS_NAMES.iter().enumerate() {
            if b.classes & (1 << bit) != 0 {
                reasons.push(format!("{at}: new {name}"));
            }
        }
        for name in grammar::names(b.grammar) {
            reasons.push(format!("{at}: {name}"));
        }
    }

    pub(crate) fn normalize(&mut self) {
        self.distinct.sort_unstable();
        self.distinct.dedup();
        self.distinct.truncate(DISTINCT);
        self.flags &= (1 << MARKERS.len()) - 1;
        self.kinds &= (1 << KIND_NAMES.len()) - 1;
        self.classes &= (1 << CLASS_NAMES.len()) - 1;
        self.grammar &= (1 << grammar::NAMES.len()) - 1;
    }
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
