//! Bounded building blocks of a profile: keyed maps of rules, small sets, address sets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::value::{ValueProfile, ValueSample};

/// Keys longer than this are never learned by name: an attacker controls them, and the
/// profile must not grow with what an attacker sends.
pub const MAX_KEY_LEN: usize = 96;

/// A learned rule for one kind of sample.
pub trait Rule: Default + Clone {
    /// What one request contributes to the rule.
    type Sample;
    /// Widens the rule to accept `sample`.
    fn learn(&mut self, sample: &Self::Sample);
    /// Widens the rule to accept whatever `other` accepts.
    fn merge(&mut self, other: &Self);
    /// Appends the ways `sample` breaks the rule, each prefixed with `at`.
    fn check(&self, sample: &Self::Sample, at: &str, reasons: &mut Vec<String>);
    /// Whether `sample` breaks nothing, i.e. `check` would append no reason. Deciding asks
    /// this first and builds the names of reasons only for what fails; a rule overrides it
    /// with a check that formats nothing.
    fn accepts(&self, sample: &Self::Sample) -> bool {
        let mut reasons = Vec::new();
        self.check(sample, "", &mut reasons);
        reasons.is_empty()
    }
    /// Restores invariants after loading.
    fn normalize(&mut self) {}
}

impl Rule for ValueProfile {
    type Sample = ValueSample;
    fn learn(&mut self, sample: &ValueSample) {
        ValueProfile::learn(self, sample)
    }
    fn merge(&mut self, other: &Self) {
        ValueProfile::merge(self, other)
    }
    fn check(&self, sample: &ValueSample, at: &str, reasons: &mut Vec<String>) {
        ValueProfile::check(self, sample, at, reasons)
    }
    fn accepts(&self, sample: &ValueSample) -> bool {
        ValueProfile::accepts(self, sample)
    }
    fn normalize(&mut self) {
        ValueProfile::normalize(self)
    }
}

/// Rules by key (query parameter, header, JSON path, ...), at most `max_keys` of them; samples
/// of further keys are folded into one `other` rule so memory stays bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: Deserialize<'de>"))]
pub struct KeyedRules<R> {
    #[serde(rename = "k", default, skip_serializing_if = "BTreeMap::is_empty")]
    keys: BTreeMap<String, R>,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    other: Option<R>,
    /// Profile of the names of the keys folded into `other`: an unknown key must at least be
    /// named like the keys that were folded.
    #[serde(rename = "on", default, skip_serializing_if = "Option::is_none")]
    other_names: Option<ValueProfile>,
}

impl<R> Default for KeyedRules<R> {
    fn default() -> Self {
        KeyedRules {
            keys: BTreeMap::new(),
            other: None,
            other_names: None,
        }
    }
}

impl<R: Rule> KeyedRules<R> {
    /// The keys learned by name.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.keys.keys()
    }

    /// The rules learned, by name and folded.
    pub fn rules(&self) -> impl Iterator<Item = &R> {
        self.keys.values().chain(self.other.as_ref())
    }

    /// Number of keys learned by name.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether neither a key nor the `other` rule was learned.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.other.is_none()
    }

    /// Whether samples were folded into the `other` rule.
    pub fn has_other(&self) -> bool {
        self.other.is_some()
    }

    /// The rule learned for `key`, if it was learned by name.
    pub fn get(&self, key: &str) -> Option<&R> {
        self.keys.get(key)
    }

    /// Learns `sample` under `key`, or under `other` when the map is full.
    pub fn learn(&mut self, key: &str, sample: &R::Sample, max_keys: usize) {
        if let Some(rule) = self.keys.get_mut(key) {
            rule.learn(sample);
        } else if self.keys.len() < max_keys && key.len() <= MAX_KEY_LEN {
            let mut rule = R::default();
            rule.learn(sample);
            self.keys.insert(key.to_string(), rule);
        } else {
            self.other.get_or_insert_with(R::default).learn(sample);
            self.other_names
                .get_or_insert_with(ValueProfile::default)
                .learn(&ValueSample::of(key));
        }
    }

    fn fold(&mut self, key: &str, rule: &R) {
        self.other.get_or_insert_with(R::default).merge(rule);
        self.other_names
            .get_or_insert_with(ValueProfile::default)
            .learn(&ValueSample::of(key));
    }

    /// Merges `other`, folding keys beyond `max_keys` into the `other` rule.
    pub fn merge(&mut self, other: &KeyedRules<R>, max_keys: usize) {
        for (key, rule) in &other.keys {
            if let Some(mine) = self.keys.get_mut(key) {
                mine.merge(rule);
            } else if self.keys.len() < max_keys {
                self.keys.insert(key.clone(), rule.clone());
            } else {
                self.fold(key, rule);
            }
        }
        if let Some(rule) = &other.other {
            self.other.get_or_insert_with(R::default).merge(rule);
        }
        if let Some(names) = &other.other_names {
            self.other_names
                .get_or_insert_with(ValueProfile::default)
                .merge(names);
        }
    }

    /// Checks `sample` of `key`; a key never learned is a reason unless keys were folded
    /// into `other`, whose rule then applies.
    pub fn check(&self, prefix: &str, key: &str, sample: &R::Sample, reasons: &mut Vec<String>) {
        if self.accepts(key, sample) {
            return;
        }
        self.check_at(
            &format!("{prefix}.{}", printable(key)),
            key,
            sample,
            reasons,
        )
    }

    /// Whether `sample` of `key` breaks nothing: `check` would append no reason.
    pub fn accepts(&self, key: &str, sample: &R::Sample) -> bool {
        if let Some(rule) = self.keys.get(key) {
            return rule.accepts(sample);
        }
        let Some(rule) = &self.other else {
            return false;
        };
        self.other_names
            .as_ref()
            .is_none_or(|names| names.accepts(&ValueSample::of(key)))
            && rule.accepts(sample)
    }

    /// Like `check`, with the place named in reasons given whole.
    pub fn check_at(&self, at: &str, key: &str, sample: &R::Sample, reasons: &mut Vec<String>) {
        if let Some(rule) = self.keys.get(key) {
            return rule.check(sample, at, reasons);
        }
        let Some(rule) = &self.other else {
            return reasons.push(format!("{at}: key not known"));
        };
        if let Some(names) = &self.other_names {
            names.check(&ValueSample::of(key), &format!("{at} (key name)"), reasons);
        }
        rule.check(sample, at, reasons);
    }

    /// Moves every rule whose key `rename` maps to a new key there (merged with what is
    /// already there), after `adjust` made it fit the new key.
    pub(crate) fn rekey(
        &mut self,
        rename: impl Fn(&str) -> Option<String>,
        adjust: impl Fn(&str, &mut R),
    ) {
        let moving: Vec<String> = self
            .keys
            .keys()
            .filter(|k| rename(k).is_some())
            .cloned()
            .collect();
        for old in moving {
            if let (Some(mut rule), Some(new)) = (self.keys.remove(&old), rename(&old)) {
                adjust(&old, &mut rule);
                match self.keys.get_mut(&new) {
                    Some(there) => there.merge(&rule),
                    None => {
                        self.keys.insert(new, rule);
                    }
                }
            }
        }
    }

    /// The rule that applies to `key`: its own, or `other` when keys were folded.
    pub fn rule_for(&self, key: &str) -> Option<&R> {
        self.keys.get(key).or(self.other.as_ref())
    }

    /// Enforces `max_keys` and each rule's invariants on a loaded document.
    pub fn normalize(&mut self, max_keys: usize) {
        while self.keys.len() > max_keys {
            if let Some((key, rule)) = self.keys.pop_last() {
                self.fold(&key, &rule);
            }
        }
        let long: Vec<String> = self
            .keys
            .keys()
            .filter(|k| k.len() > MAX_KEY_LEN)
            .cloned()
            .collect();
        for key in long {
            if let Some(rule) = self.keys.remove(&key) {
                self.fold(&key, &rule);
            }
        }
        for rule in self.keys.values_mut() {
            rule.normalize();
        }
        if let Some(rule) = &mut self.other {
            rule.normalize();
        }
        if let Some(names) = &mut self.other_names {
            names.normalize();
        }
    }
}

/// Renders attacker-controlled text for a reason: bounded length, control characters escaped.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 48 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A small sorted set of learned values; once more than `max` distinct values were seen it
/// becomes open (accepts anything) because the feature does not discriminate for this service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallSet<T> {
    #[serde(
        rename = "v",
        default = "Vec::new",
        skip_serializing_if = "Vec::is_empty"
    )]
    values: Vec<T>,
    #[serde(rename = "open", default, skip_serializing_if = "std::ops::Not::not")]
    open: bool,
}

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet {
            values: Vec::new(),
            open: false,
        }
    }
}

impl SmallSet<String> {
    /// Whether `v` is accepted, without making a `String` of it.
    pub fn contains_str(&self, v: &str) -> bool {
        self.open
            || self
                .values
                .binary_search_by(|known| known.as_str().cmp(v))
                .is_ok()
    }
}

impl<T: Ord + Clone> SmallSet<T> {
    /// Whether `v` is accepted.
    pub fn contains(&self, v: &T) -> bool {
        self.open || self.values.binary_search(v).is_ok()
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && !self.open
    }

    /// Adds `v`, opening the set when it would exceed `max`.
    pub fn learn(&mut self, v: T, max: usize) {
        if self.open {
            return;
        }
        if let Err(at) = self.values.binary_search(&v) {
            if self.values.len() >= max {
                self.open = true;
                self.values.clear();
            } else {
                self.values.insert(at, v);
            }
        }
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &SmallSet<T>, max: usize) {
        if other.open {
            self.open = true;
            self.values.clear();
            return;
        }
        for v in &other.values {
            self.learn(v.clone(), max);
        }
    }

    /// Restores order and the bound on a loaded document.
    pub fn normalize(&mut self, max: usize) {
        self.values.sort();
        self.values.dedup();
        if self.values.len() > max {
            self.open = true;
            self.values.clear();
        }
    }
}

/// The network an address is learned as: a /24 for IPv4, a /64 for IPv6, so that clients
/// behind one NAT pool or one ingress subnet are one entry.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            // Written digit by digit: this runs for every request, and the formatting
            // machinery costs more than the rest of the address checks together.
            let mut net = String::with_capacity(18);
            for octet in &v4.octets()[..3] {
                push_decimal(&mut net, *octet);
                net.push('.');
            }
            net.push_str("0/24");
            net
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network_of(IpAddr::V4(v4));
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// `f` of `network_of(ip)`, the text written on the stack for IPv4: every request's client
/// is checked, and its network need not be allocated for that.
pub fn with_network<R>(ip: IpAddr, f: impl FnOnce(&str) -> R) -> R {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return f(&network_of(ip)),
        },
    };
    // `255.255.255.0/24` at most.
    let mut buf = [0u8; 16];
    let mut n = 0;
    for octet in &v4.octets()[..3] {
        for digit in decimal_digits(*octet) {
            buf[n] = digit;
            n += 1;
        }
        buf[n] = b'.';
        n += 1;
    }
    buf[n..n + 4].copy_from_slice(b"0/24");
    n += 4;
    match std::str::from_utf8(&buf[..n]) {
        Ok(net) => f(net),
        // Digits, dots and a slash are always text.
        Err(_) => f(&network_of(ip)),
    }
}

/// The decimal digits of `n`, without leading zeros.
fn decimal_digits(n: u8) -> impl Iterator<Item = u8> {
    let digits = [b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    digits.into_iter().skip(skip)
}

fn push_decimal(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

/// A media type (`application/json`) with the value profiles of its parameters (`charset`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRule {
    #[serde(rename = "t", default, skip_serializing_if = "SmallSet::is_empty")]
    types: SmallSet<String>,
    #[serde(rename = "p", default, skip_serializing_if = "KeyedRules::is_empty")]
    params: KeyedRules<ValueProfile>,
}

/// A parsed content type header: lowercased media type and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lowercased.
    pub essence: String,
    /// Parameters with lowercased names and unquoted values.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses a `Content-Type` value; never fails, an odd value is learned as it is.
    pub fn parse(value: &str) -> Self {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        MediaType { essence, params }
    }
}

/// Bound on the distinct media types learned before the set opens.
const MAX_MEDIA_TYPES: usize = 8;
/// Bound on the distinct parameters of a media type learned by name.
const MAX_MEDIA_PARAMS: usize = 8;

impl MediaRule {
    /// Widens the rule to accept `media`.
    pub fn learn(&mut self, media: &MediaType) {
        self.types.learn(media.essence.clone(), MAX_MEDIA_TYPES);
        for (k, v) in &media.params {
            self.params.learn(k, &ValueSample::of(v), MAX_MEDIA_PARAMS);
        }
    }

    /// Widens the rule to accept whatever `other` accepts.
    pub fn merge(&mut self, other: &MediaRule) {
        self.types.merge(&other.types, MAX_MEDIA_TYPES);
        self.params.merge(&other.params, MAX_MEDIA_PARAMS);
    }

    /// Whether `media` breaks nothing: `check` would append no reason.
    pub fn accepts(&self, media: &MediaType) -> bool {
        self.types.contains(&media.essence)
            && media
                .params
                .iter()
                .all(|(k, v)| self.params.accepts(k, &ValueSample::of(v)))
    }

    /// `accepts(&MediaType::parse(value))`, without allocating when the type and parameter
    /// names are already lowercase (as they nearly always are).
    pub fn accepts_value(&self, value: &str) -> bool {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        let has_upper = |s: &str| s.bytes().any(|b| b.is_ascii_uppercase());
        if has_upper(essence) {
            return self.accepts(&MediaType::parse(value));
        }
        if !self.types.contains_str(essence) {
            return false;
        }
        for part in parts {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let k = k.trim();
            if has_upper(k) {
                return self.accepts(&MediaType::parse(value));
            }
            let v = v.trim().trim_matches('"');
            if !self.params.accepts(k, &ValueSample::of(v)) {
                return false;
            }
        }
        true
    }

    /// Appends the ways `media` breaks the rule.
    pub fn check(&self, media: &MediaType, at: &str, reasons: &mut Vec<String>) {
        if !self.types.contains(&media.essence) {
            reasons.push(format!(
                "{at}: type '{}' not known",
                printable(&media.essence)
            ));
        }
        for (k, v) in &media.params {
            self.params.check(at, k, &ValueSample::of(v), reasons);
        }
    }

    pub(crate) fn normalize(&mut self) {
        self.types.normalize(MAX_MEDIA_TYPES);
        self.params.normalize(MAX_MEDIA_PARAMS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules that learned `abc` under the keys `{prefix}0` to `{prefix}{n-1}`, at most `bound`
    /// of them by name.
    fn learned(prefix: &str, n: usize, bound: usize) -> KeyedRules<ValueProfile> {
        let mut rules = KeyedRules::default();
        for i in 0..n {
            rules.learn(&format!("{prefix}{i}"), &ValueSample::of("abc"), bound);
        }
        rules
    }

    /// The reasons `rules` give for `key=value` in section `q`.
    fn reasons(rules: &KeyedRules<ValueProfile>, key: &str, value: &str) -> Vec<String> {
        let mut reasons = Vec::new();
        rules.check("q", key, &ValueSample::of(value), &mut reasons);
        reasons
    }

    #[test]
    fn keys_beyond_the_bound_fold_into_other() {
        let rules = learned("k", 10, 4);
        assert_eq!(rules.len(), 4, "only four keys by name");
        assert!(rules.has_other(), "the rest folded into other");
        // k9 was folded: the other rule applies, and "abc" fits it.
        let r = reasons(&rules, "k9", "abc");
        assert!(r.is_empty(), "{r:?}");
        let r = reasons(&rules, "k9", "a$c");
        assert!(
            r.contains(&"q.k9: new punctuation '$'".to_string()),
            "{r:?}"
        );
    }

    #[test]
    fn folded_keys_check_the_key_name_too() {
        let rules = learned("utm", 6, 2);
        let r = reasons(&rules, "utm7", "abc");
        assert!(r.is_empty(), "{r:?}");
        let r = reasons(&rules, "x[$ne]", "abc");
        let want = "q.x[$ne] (key name): new punctuation '$'";
        assert!(r.contains(&want.to_string()), "{r:?}");
    }

    #[test]
    fn unknown_key_without_other_is_a_reason() {
        let mut rules: KeyedRules<ValueProfile> = KeyedRules::default();
        rules.learn("a", &ValueSample::of("1"), 4);
        let mut reasons = Vec::new();
        rules.check("query", "b", &ValueSample::of("1"), &mut reasons);
        assert_eq!(reasons, vec!["query.b: key not known".to_string()]);
    }

    #[test]
    fn long_keys_are_never_learned_by_name() {
        let mut rules: KeyedRules<ValueProfile> = KeyedRules::default();
        let long = "x".repeat(MAX_KEY_LEN + 1);
        rules.learn(&long, &ValueSample::of("1"), 4);
        assert_eq!(rules.len(), 0);
        assert!(rules.has_other());
    }

    #[test]
    fn merge_keeps_the_bound() {
        let mut a: KeyedRules<ValueProfile> = KeyedRules::default();
        let mut b: KeyedRules<ValueProfile> = KeyedRules::default();
        for i in 0..3 {
            a.learn(&format!("a{i}"), &ValueSample::of("x"), 4);
            b.learn(&format!("b{i}"), &ValueSample::of("y"), 4);
        }
        a.merge(&b, 4);
        assert_eq!(a.len(), 4);
        assert!(a.has_other());
    }

    #[test]
    fn small_set_opens_past_its_bound() {
        let mut s = SmallSet::default();
        s.learn("GET".to_string(), 2);
        s.learn("POST".to_string(), 2);
        assert!(!s.contains(&"PUT".to_string()));
        s.learn("PUT".to_string(), 2);
        assert!(
            s.contains(&"DELETE".to_string()),
            "open set accepts anything"
        );
    }

    #[test]
    fn networks_group_nearby_addresses() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.200".parse().unwrap();
        let c: IpAddr = "::ffff:10.1.2.9".parse().unwrap();
        assert_eq!(network_of(a), "10.1.2.0/24");
        assert_eq!(network_of(a), network_of(b));
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "192.168.100.7",
            "255.255.255.255",
            "9.99.100.1",
            "::ffff:10.9.8.7",
            "fd00:1:2:3::5",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(with_network(ip, str::to_string), network_of(ip), "{ip}");
        }
        assert_eq!(network_of(a), network_of(c));
        for (ip, net) in [
            ("0.0.0.0", "0.0.0.0/24"),
            ("9.10.99.1", "9.10.99.0/24"),
            ("100.200.255.255", "100.200.255.0/24"),
        ] {
            assert_eq!(network_of(ip.parse().unwrap()), net);
        }
        let d: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        assert_eq!(network_of(d), "2001:db8:1:2::/64");
    }

    #[test]
    fn media_values_are_accepted_as_parsed_ones() {
        let mut rule = MediaRule::default();
        rule.learn(&MediaType::parse("application/json; charset=utf-8"));
        rule.learn(&MediaType::parse("text/plain"));
        for value in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=\"utf-8\"",
            "Application/JSON; Charset=UTF-8",
            "application/json; charset=utf$8",
            "application/json; boundary=x",
            "application/json; novalue; charset=utf-8",
            "text/plain",
            " text/plain ;",
            "text/html",
            "",
            ";;=",
        ] {
            assert_eq!(
                rule.accepts_value(value),
                rule.accepts(&MediaType::parse(value)),
                "{value:?}"
            );
        }
    }

    #[test]
    fn media_type_parameters_are_profiled() {
        let mut rule = MediaRule::default();
        rule.learn(&MediaType::parse("application/json; charset=utf-8"));
        let mut reasons = Vec::new();
        rule.check(
            &MediaType::parse("Application/JSON;charset=UTF-8"),
            "ct",
            &mut reasons,
        );
        assert!(reasons.is_empty(), "{reasons:?}");
        rule.check(
            &MediaType::parse("text/xml; boundary=x"),
            "ct",
            &mut reasons,
        );
        assert_eq!(
            reasons,
            vec![
                "ct: type 'text/xml' not known".to_string(),
                "ct.boundary: key not known".to_string()
            ]
        );
    }
}
