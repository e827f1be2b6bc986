//! From bytes to validated policies: size and expansion limits, YAML documents, structure errors.
//!
//! The input is read twice. The first pass walks every document without building anything and
//! stops as soon as the expanded tree (aliases replayed) exceeds the node or byte budget, so a
//! billion-laughs input costs a bounded amount of work. The second pass builds the typed
//! documents, which the budget has already proven small.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::Deserialize;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::model::{Policy, Scope};
use crate::raw::RawPolicy;
use crate::spans::SpanIndex;
use crate::validate;
pub use crate::validate::limits::Limits;

/// Policies that passed validation, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub policies: Vec<Policy>,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a (multi-document) `KubeArmorPolicy` YAML input with default limits.
pub fn parse_policies(bytes: &[u8]) -> Result<Parsed, Diagnostics> {
    parse_policies_with(bytes, &Limits::default())
}

/// Parses and validates with explicit limits; any error rejects the whole input.
pub fn parse_policies_with(bytes: &[u8], limits: &Limits) -> Result<Parsed, Diagnostics> {
    parse_scoped(bytes, limits, &Scope::Namespace, None)
}

/// Pod annotation carrying inline policies for that pod (one or more `KubeArmorPolicy`
/// documents); it sits under `palisade.dev/`, the prefix containerd is told to pass on.
pub const POD_POLICY_ANNOTATION: &str = "palisade.dev/policy";

/// Parses the policies inlined in a pod's annotation: they are scoped to that pod, and take the
/// pod's namespace (a different `metadata.namespace` is an error).
pub fn parse_pod_annotation(
    namespace: &str,
    pod_name: &str,
    value: &str,
    limits: &Limits,
) -> Result<Parsed, Diagnostics> {
    let scope = Scope::Pod {
        pod_name: pod_name.to_string(),
    };
    parse_scoped(value.as_bytes(), limits, &scope, Some(namespace))
}

fn parse_scoped(
    bytes: &[u8],
    limits: &Limits,
    scope: &Scope,
    forced_namespace: Option<&str>,
) -> Result<Parsed, Diagnostics> {
    let mut diags = Vec::new();
    if bytes.len() > limits.max_input_bytes {
        diags.push(Diagnostic::error(
            0,
            ".",
            format!(
                "input is {} bytes, limit is {}",
                bytes.len(),
                limits.max_input_bytes
            ),
        ));
        return Err(Diagnostics { items: diags });
    }
    let clean_documents = measure(bytes, limits, &mut diags);

    let mut policies = Vec::new();
    let documents = serde_yaml::Deserializer::from_slice(bytes).take(clean_documents);
    for (doc, de) in documents.enumerate() {
        let mut removed = Vec::new();
        let raw: Option<RawPolicy> = match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(err) => {
                diags.push(structure_error(doc, &err));
                match recover(bytes, doc, err.path(), &mut removed, &mut diags) {
                    Some(raw) => Some(raw),
                    None => continue,
                }
            }
        };
        // An empty document (a stray `---` or only comments) holds no policy.
        let Some(raw) = raw else { continue };
        let ctx = validate::Context {
            document: doc,
            limits,
            scope,
            forced_namespace,
        };
        let mut found = Vec::new();
        if let Some(policy) = validate::policy(&raw, &ctx, &mut found) {
            if removed.is_empty() {
                policies.push((doc, policy));
            }
        }
        // Problems caused by a field that recovery took out (such as "no rules" after a
        // malformed section) would only repeat the structure error in other words.
        found.retain(|d| !removed.iter().any(|r| related(r, &d.path)));
        diags.extend(found);
    }
    validate::unique_ids(&policies, &mut diags);
    if policies.is_empty() && diags.is_empty() {
        diags.push(Diagnostic::warning(0, ".", "input holds no policies"));
    }
    if diags.iter().any(|d| d.location.is_none() && d.path != ".") {
        let index = SpanIndex::build(bytes);
        for d in diags.iter_mut().filter(|d| d.location.is_none()) {
            d.location = index.locate(d.document, &d.path);
        }
    }

    if diags.len() > limits.max_diagnostics {
        let dropped = diags.len() - limits.max_diagnostics;
        // Keep errors first so that a flood of warnings cannot hide why the input was rejected.
        diags.sort_by_key(|d| std::cmp::Reverse(d.level));
        diags.truncate(limits.max_diagnostics);
        let note = format!("{dropped} more problems not shown");
        let has_errors = diags.iter().any(Diagnostic::is_error);
        diags.push(if has_errors {
            Diagnostic::error(0, ".", note)
        } else {
            Diagnostic::warning(0, ".", note)
        });
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics { items: diags });
    }
    Ok(Parsed {
        policies: policies.into_iter().map(|(_, p)| p).collect(),
        warnings: diags,
    })
}

/// Structure errors recovered from per document before giving up on finding the others.
const MAX_RECOVERIES: usize = 16;

/// After a structure error, takes the offending field out of the document and tries again, so
/// that every unknown or mistyped field is reported and the rest is still validated. Returns the
/// cleaned document; `removed` lists the paths taken out.
fn recover(
    bytes: &[u8],
    doc: usize,
    first: &serde_path_to_error::Path,
    removed: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<RawPolicy> {
    let de = serde_yaml::Deserializer::from_slice(bytes).nth(doc)?;
    let mut value = serde_yaml::Value::deserialize(de).ok()?;
    let mut path = first.clone();
    for _ in 0..MAX_RECOVERIES {
        if !remove(&mut value, &path) {
            return None;
        }
        removed.push(path.to_string());
        match serde_path_to_error::deserialize::<_, Option<RawPolicy>>(value.clone()) {
            Ok(raw) => return raw,
            Err(err) => {
                diags.push(structure_error(doc, &err));
                path = err.path().clone();
            }
        }
    }
    None
}

/// Removes the mapping entry at `path`; false if the path does not lead to one.
fn remove(value: &mut serde_yaml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key: last }, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Map { key }, serde_yaml::Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_yaml::Value::Sequence(s)) => s.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        serde_yaml::Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        _ => false,
    }
}

/// Whether one path is the other or encloses it.
fn related(a: &str, b: &str) -> bool {
    let encloses = |outer: &str, inner: &str| {
        inner == outer
            || outer == "."
            || inner
                .strip_prefix(outer)
                .is_some_and(|t| t.starts_with('.') || t.starts_with('['))
    };
    encloses(a, b) || encloses(b, a)
}

/// First pass: counts documents whose syntax is sound and whose expansion fits the budget;
/// records a diagnostic for the first one that does not (the YAML parser cannot resume after it).
fn measure(bytes: &[u8], limits: &Limits, diags: &mut Vec<Diagnostic>) -> usize {
    let mut budget = Budget {
        nodes: 0,
        scalar_bytes: 0,
        limits,
        exceeded: None,
    };
    let mut clean = 0;
    for (doc, de) in serde_yaml::Deserializer::from_slice(bytes).enumerate() {
        if doc >= limits.max_documents {
            diags.push(Diagnostic::error(
                doc,
                ".",
                format!(
                    "input has more than {} YAML documents",
                    limits.max_documents
                ),
            ));
            return clean;
        }
        match (Counter {
            budget: &mut budget,
        })
        .deserialize(de)
        {
            Ok(()) => clean += 1,
            Err(err) => {
                let diag = match budget.exceeded.take() {
                    Some(message) => Diagnostic::error(doc, ".", message),
                    None => Diagnostic::error(doc, ".", yaml_message(&err)),
                };
                diags.push(diag.at(location(&err)));
                return clean;
            }
        }
    }
    clean
}

struct Budget<'a> {
    nodes: usize,
    scalar_bytes: usize,
    limits: &'a Limits,
    exceeded: Option<String>,
}

impl Budget<'_> {
    fn charge<E: de::Error>(&mut self, scalar_bytes: usize) -> Result<(), E> {
        self.nodes += 1;
        self.scalar_bytes = self.scalar_bytes.saturating_add(scalar_bytes);
        let over = if self.nodes > self.limits.max_nodes {
            format!("{} YAML nodes", self.limits.max_nodes)
        } else if self.scalar_bytes > self.limits.max_scalar_bytes {
            format!("{} bytes of scalars", self.limits.max_scalar_bytes)
        } else {
            return Ok(());
        };
        let msg = format!("input expands to more than {over} (are aliases repeating large parts?)");
        self.exceeded = Some(msg.clone());
        Err(E::custom(msg))
    }
}

/// Walks any YAML value, charging the budget for every node it visits.
struct Counter<'b, 'l> {
    budget: &'b mut Budget<'l>,
}

impl<'l> Counter<'_, 'l> {
    /// A counter for a node below this one, charging the same budget.
    fn child(&mut self) -> Counter<'_, 'l> {
        Counter {
            budget: &mut *self.budget,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.budget.charge(v.len())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.budget.charge(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.budget.charge(0)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.budget.charge(0)?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.budget.charge(0)?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
        // Tagged values (`!tag value`) arrive as enums: charge the tag and walk the value.
        let ((), variant) = data.variant_seed(self.child())?;
        de::VariantAccess::newtype_variant_seed(variant, self.child())
    }
}

fn location(err: &serde_yaml::Error) -> Option<Location> {
    err.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    })
}

/// The YAML library's message without the position it appends (kept separately).
fn yaml_message(err: &serde_yaml::Error) -> String {
    let mut msg = err.to_string();
    if let Some(l) = err.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(idx) = msg.find(&suffix) {
            msg.replace_range(idx..idx + suffix.len(), "");
        }
    }
    msg
}

/// Turns a structural error from the typed pass into a diagnostic naming the field at fault.
fn structure_error(doc: usize, err: &serde_path_to_error::Error<serde_yaml::Error>) -> Diagnostic {
    let path = err.path().to_string();
    let mut msg = yaml_message(err.inner());
    // The YAML library prefixes its own idea of the path, which stops at the parent for unknown
    // fields; the tracked path is the precise one, so the prefix goes.
    if let Some((prefix, rest)) = msg.split_once(": ") {
        let is_ancestor = path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|tail| tail.starts_with('.') || tail.starts_with('['));
        if is_ancestor {
            msg = rest.to_string();
        }
    }
    let (path, message) = rewrite(&path, &msg);
    Diagnostic::error(doc, path, message).at(location(err.inner()))
}

fn join(parent: &str, field: &str) -> String {
    if parent == "." || parent.is_empty() {
        field.to_string()
    } else if parent.ends_with(&format!(".{field}")) || parent == field {
        parent.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Rewrites serde's wording into the house style: the field goes into the path, backticks and
/// Rust type names go away.
fn rewrite(parent: &str, msg: &str) -> (String, String) {
    for (prefix, what) in [
        ("unknown field `", "unknown field"),
        ("duplicate field `", "duplicate field"),
    ] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((field, tail)) = rest.split_once('`') {
                let tail = tail.trim_start_matches(',').trim().replace('`', "");
                let message = if tail.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}, {tail}")
                };
                return (join(parent, field), message);
            }
        }
    }
    let mut message = msg.replace('`', "");
    if let Some(idx) = message.find("expected struct Raw") {
        message.replace_range(idx.., "expected a mapping");
    }
    for (rust, human) in [
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
    ] {
        if let Some(head) = message.strip_suffix(rust) {
            message = format!("{head}{human}");
        }
    }
    (parent.to_string(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each (parent path, serde's message) comes out as (path, message).
    #[track_caller]
    fn assert_rewrites(cases: &[(&str, &str, &str, &str)]) {
        for &(parent, raw, path, message) in cases {
            let want = (path.to_string(), message.to_string());
            assert_eq!(rewrite(parent, raw), want, "{parent}: {raw}");
        }
    }

    #[test]
    fn rewrite_moves_unknown_field_into_path() {
        assert_rewrites(&[
            (
                "spec.file",
                "unknown field `matchPath`, expected one of `matchPaths`, `matchDirectories`",
                "spec.file.matchPath",
                "unknown field, expected one of matchPaths, matchDirectories",
            ),
            (
                ".",
                "unknown field `spek`, expected `spec`",
                "spek",
                "unknown field, expected spec",
            ),
        ]);
    }

    #[test]
    fn rewrite_hides_rust_type_names() {
        assert_rewrites(&[
            (
                "spec.file",
                "invalid type: sequence, expected struct RawFile",
                "spec.file",
                "invalid type: sequence, expected a mapping",
            ),
            (
                "spec.severity",
                "invalid type: string \"x\", expected i64",
                "spec.severity",
                "invalid type: string \"x\", expected an integer",
            ),
        ]);
    }

    #[test]
    fn budget_stops_at_the_node_limit() {
        let limits = Limits {
            max_nodes: 10,
            ..Limits::default()
        };
        let mut diags = Vec::new();
        let clean = measure(b"a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", &limits, &mut diags);
        assert_eq!(clean, 0);
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0]
                .message
                .starts_with("input expands to more than 10 YAML nodes"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn measure_counts_clean_documents_before_a_syntax_error() {
        let mut diags = Vec::new();
        let clean = measure(
            b"a: 1\n---\nb: 2\n---\nc: [\n",
            &Limits::default(),
            &mut diags,
        );
        assert_eq!(clean, 2);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].document, 2);
        assert!(diags[0].location.is_some());
    }
}
