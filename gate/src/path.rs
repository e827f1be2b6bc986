//! Paths: templates whose variable positions are learned. A segment that looks like a fixed
//! name (letters, `-`, `_`) is kept literally until its position has taken many distinct
//! names; then the position is a parameter (`/api/users/*/profile`), its values judged by a
//! field model like any other field, and the templates learned before are folded into it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ranges::{compress, Ranges};
use crate::request::percent_decode_cow;
use crate::rules::{KeyedRules, Rule};
use crate::value::{ValueProfile, ValueSample};

/// Segments a template names; deeper ones are one remainder value.
pub const TEMPLATE_SEGMENTS: usize = 4;
/// Distinct names after which a position is a parameter.
pub const PARAMETER_AFTER: usize = 8;

/// Per template prefix, the distinct names seen at the next position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Positions(BTreeMap<String, Vec<u32>>);

impl Positions {
    /// Whether the position after `prefix` is a parameter.
    pub fn is_parameter(&self, prefix: &str) -> bool {
        self.0
            .get(prefix)
            .is_some_and(|d| d.len() > PARAMETER_AFTER)
    }

    /// Records name `hash` after `prefix`; true when this makes the position a parameter.
    fn learn(&mut self, prefix: &str, hash: u32, max: usize) -> bool {
        if !self.0.contains_key(prefix) {
            if self.0.len() >= max {
                return false;
            }
            self.0.insert(prefix.to_string(), Vec::new());
        }
        let Some(d) = self.0.get_mut(prefix) else {
            return false;
        };
        if d.len() > PARAMETER_AFTER {
            return false;
        }
        if let Err(at) = d.binary_search(&hash) {
            d.insert(at, hash);
        }
        d.len() > PARAMETER_AFTER
    }

    /// Unites what `other` saw; returns the prefixes that became parameters.
    pub fn merge(&mut self, other: &Positions, max: usize) -> Vec<String> {
        let mut promoted = Vec::new();
        for (prefix, hashes) in &other.0 {
            for h in hashes {
                if self.learn(prefix, *h, max) {
                    promoted.push(prefix.clone());
                }
            }
        }
        promoted
    }

    pub(crate) fn normalize(&mut self, max: usize) {
        while self.0.len() > max {
            self.0.pop_last();
        }
        for d in self.0.values_mut() {
            d.sort_unstable();
            d.dedup();
            d.truncate(PARAMETER_AFTER + 1);
        }
    }
}

/// A path as a template sees it.
pub struct Split<'a> {
    /// `/api/users/*/profile`, `/static/…` past `TEMPLATE_SEGMENTS`.
    pub template: String,
    /// Decoded values at the `*` positions, with their segment index.
    pub params: Vec<(usize, Cow<'a, str>)>,
    /// Decoded segments past `TEMPLATE_SEGMENTS`, joined by `/`.
    pub rest: Option<Cow<'a, str>>,
    pub segments: u64,
    /// Literal names kept: the prefix before each and the name's hash, for learning (empty
    /// from `split_to_decide`).
    pub literals: Vec<(String, u32)>,
}

fn looks_fixed(seg: &str) -> bool {
    seg.chars().count() <= 32
        && !seg.is_empty()
        && seg
            .chars()
            .all(|c| c.is_alphabetic() || c == '-' || c == '_')
}

/// Splits `raw_path` by the learned `positions`.
pub fn split<'a>(raw_path: &'a str, positions: &Positions) -> Split<'a> {
    split_keeping(raw_path, positions, true)
}

/// `split` without the literal names, which only learning needs: deciding does not hash
/// them.
pub fn split_to_decide<'a>(raw_path: &'a str, positions: &Positions) -> Split<'a> {
    split_keeping(raw_path, positions, false)
}

fn split_keeping<'a>(raw_path: &'a str, positions: &Positions, literals_too: bool) -> Split<'a> {
    let mut segs = raw_path.split('/').filter(|s| !s.is_empty());
    let mut template = String::with_capacity(raw_path.len().min(64) + 4);
    let mut params = Vec::new();
    let mut literals = Vec::new();
    let mut count = 0u64;
    for (i, seg) in segs.by_ref().take(TEMPLATE_SEGMENTS).enumerate() {
        count += 1;
        let decoded = percent_decode_cow(seg, false);
        if looks_fixed(&decoded) && !positions.is_parameter(&template) {
            if literals_too {
                let hash = ValueSample::of(&decoded).hash;
                literals.push((template.clone(), hash));
            }
            template.push('/');
            template.push_str(seg);
        } else {
            template.push_str("/*");
            params.push((i, decoded));
        }
    }
    let rest: Vec<&str> = segs.collect();
    count += rest.len() as u64;
    let rest = if rest.is_empty() {
        None
    } else {
        template.push_str("/…");
        Some(
            percent_decode_cow(&rest.join("/"), false)
                .into_owned()
                .into(),
        )
    };
    if template.is_empty() {
        template.push('/');
    }
    Split {
        template,
        params,
        rest,
        segments: count,
        literals,
    }
}

/// Rules of one path template: the segment count, a field model per parameter position and
/// one for the remainder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    #[serde(rename = "s")]
    pub(crate) segments: Ranges,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) params: Vec<ValueProfile>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(crate) rest: Option<ValueProfile>,
}

/// What one request contributes to a path rule.
pub struct PathSample {
    pub segments: u64,
    /// Segment index and sample of each parameter.
    pub params: Vec<(usize, ValueSample)>,
    pub rest: Option<ValueSample>,
}

impl PathSample {
    pub fn of(split: &Split<'_>) -> Self {
        PathSample {
            segments: split.segments,
            params: split
                .params
                .iter()
                .map(|(i, v)| (*i, ValueSample::of(v)))
                .collect(),
            rest: split.rest.as_deref().map(ValueSample::of),
        }
    }
}

impl Rule for PathRule {
    type Sample = PathSample;
    fn learn(&mut self, s: &PathSample) {
        self.segments.learn(compress(s.segments));
        if self.params.len() < s.params.len() {
            self.params.resize(s.params.len(), ValueProfile::default());
        }
        for (rule, (_, v)) in self.params.iter_mut().zip(&s.params) {
            rule.learn(v);
        }
        if let Some(v) = &s.rest {
            self.rest.get_or_insert_with(ValueProfile::default).learn(v);
        }
    }
    fn merge(&mut self, other: &Self) {
        self.segments.merge(&other.segments);
        if self.params.len() < other.params.len() {
            self.params
                .resize(other.params.len(), ValueProfile::default());
        }
        for (mine, theirs) in self.params.iter_mut().zip(&other.params) {
            mine.merge(theirs);
        }
        if let Some(r) = &other.rest {
            self.rest.get_or_insert_with(ValueProfile::default).merge(r);
        }
    }
    fn check(&self, s: &PathSample, at: &str, reasons: &mut Vec<String>) {
        if !self.segments.contains(compress(s.segments)) {
            reasons.push(format!(
                "{at}: {} segments outside learned range",
                s.segments
            ));
        }
        for (k, (i, v)) in s.params.iter().enumerate() {
            match self.params.get(k) {
                Some(rule) => rule.check(v, &format!("{at}[{i}]"), reasons),
                None => reasons.push(format!("{at}[{i}]: parameter not known")),
            }
        }
        if let Some(v) = &s.rest {
            match &self.rest {
                Some(rule) => rule.check(v, &format!("{at}[rest]"), reasons),
                None => reasons.push(format!("{at}[rest]: not known")),
            }
        }
    }
    fn accepts(&self, s: &PathSample) -> bool {
        self.segments.contains(compress(s.segments))
            && s.params.len() <= self.params.len()
            && self
                .params
                .iter()
                .zip(&s.params)
                .all(|(rule, (_, v))| rule.accepts(v))
            && match (&self.rest, &s.rest) {
                (_, None) => true,
                (Some(rule), Some(v)) => rule.accepts(v),
                (None, Some(_)) => false,
            }
    }
    fn normalize(&mut self) {
        self.segments.normalize();
        self.params.truncate(TEMPLATE_SEGMENTS);
        for p in &mut self.params {
            p.normalize();
        }
        if let Some(r) = &mut self.rest {
            r.normalize();
        }
    }
}

/// Learns the path of a request into `paths` and `positions`; when a position becomes a
/// parameter, the templates that named it literally are folded into the parameter template.
pub fn learn(
    paths: &mut KeyedRules<PathRule>,
    positions: &mut Positions,
    raw_path: &str,
    max: usize,
) {
    let split = split(raw_path, positions);
    let mut promoted = Vec::new();
    for (prefix, hash) in &split.literals {
        if positions.learn(prefix, *hash, max) {
            promoted.push(prefix.clone());
        }
    }
    paths.learn(&split.template, &PathSample::of(&split), max);
    for prefix in promoted {
        fold(paths, &prefix);
    }
}

/// Folds the templates with a literal name right after `prefix` into the template with a
/// parameter there, the name learned as the parameter's first value.
pub fn fold(paths: &mut KeyedRules<PathRule>, prefix: &str) {
    let after = format!("{prefix}/");
    let literal_at = |key: &str| -> Option<(String, String)> {
        let tail = key.strip_prefix(&after)?;
        let (name, more) = tail.split_once('/').map_or((tail, ""), |(n, m)| (n, m));
        if name == "*" || name == "…" || name.is_empty() {
            return None;
        }
        let more = if more.is_empty() {
            String::new()
        } else {
            format!("/{more}")
        };
        Some((name.to_string(), format!("{prefix}/*{more}")))
    };
    let stars_before = prefix.matches('*').count();
    paths.rekey(
        |key| literal_at(key).map(|(_, new)| new),
        |key, rule| {
            let Some((name, _)) = literal_at(key) else {
                return;
            };
            let mut value = ValueProfile::default();
            value.learn(&ValueSample::of(&percent_decode_cow(&name, false)));
            let at = stars_before.min(rule.params.len());
            rule.params.insert(at, value);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(paths: &[String]) -> (KeyedRules<PathRule>, Positions) {
        let (mut rules, mut positions) = (KeyedRules::default(), Positions::default());
        for p in paths {
            learn(&mut rules, &mut positions, p, 64);
        }
        (rules, positions)
    }

    #[test]
    fn positions_with_many_names_become_parameters() {
        let users = [
            "anna", "mike", "lee", "maria", "tom", "olga", "sam", "jonas", "emma", "noah",
        ];
        let paths: Vec<String> = users
            .iter()
            .flat_map(|u| {
                [
                    format!("/api/users/{u}/profile"),
                    format!("/api/users/{u}/orders"),
                ]
            })
            .chain(["/api/products".to_string(), "/api/search".to_string()])
            .collect();
        let (rules, positions) = learned(&paths);
        assert!(positions.is_parameter("/api/users"));
        assert!(!positions.is_parameter("/api"), "two names stay fixed");
        assert!(
            rules.get("/api/users/*/profile").is_some(),
            "{:?}",
            rules.keys().collect::<Vec<_>>()
        );
        assert!(rules.get("/api/users/anna/profile").is_none(), "folded");
        let new = split("/api/users/John_Doe/profile", &positions);
        assert_eq!(new.template, "/api/users/*/profile");
        let rule = rules.get(&new.template).unwrap();
        assert!(rule.accepts(&PathSample::of(&new)));
        let admin = split("/api/admin", &positions);
        assert!(rules.get(&admin.template).is_none());
        let sqli = split("/api/users/anna'%20or%20'x/profile", &positions);
        let mut reasons = Vec::new();
        rule.check(&PathSample::of(&sqli), "path", &mut reasons);
        assert_eq!(
            reasons[0],
            "path[2]: free text value where identifier was learned"
        );
    }

    #[test]
    fn numeric_segments_are_parameters_from_the_start() {
        let (rules, positions) = learned(&["/items/12".into(), "/items/907".into()]);
        let s = split("/items/4410", &positions);
        assert_eq!(s.template, "/items/*");
        assert!(rules.get("/items/*").unwrap().accepts(&PathSample::of(&s)));
        let s = split("/items/12/../../etc/passwd", &positions);
        assert_eq!(s.template, "/items/*/*/*/…");
        assert!(rules.get(&s.template).is_none());
    }
}
