//! Access to the few places of an OCI runtime spec that hardening reads or rewrites, on the
//! raw JSON so that every field containerd wrote and palisade does not know survives.

pub mod cri;

use serde_json::{Map, Value};

/// A part of the spec does not have the shape the OCI runtime spec gives it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The document itself is not a JSON object.
    #[error("spec: not a JSON object")]
    NotAnObject,
    /// A required member is missing.
    #[error("spec: {path}: missing")]
    Missing {
        /// Dotted path of the member, e.g. `process`.
        path: &'static str,
    },
    /// A member has the wrong JSON type.
    #[error("spec: {path}: expected {expected}")]
    WrongType {
        /// Dotted path of the member, e.g. `linux.maskedPaths`.
        path: String,
        /// What the OCI runtime spec says it is.
        expected: &'static str,
    },
}

/// The object under `key`, created empty when absent or null.
pub(crate) fn object_entry<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, SpecError> {
    let slot = parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| SpecError::WrongType {
        path: path.to_owned(),
        expected: "an object",
    })
}

/// The strings of the array under `key`; absent or null reads as empty.
pub(crate) fn string_list(
    parent: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<String>, SpecError> {
    let wrong = || SpecError::WrongType {
        path: path.to_owned(),
        expected: "an array of strings",
    };
    match parent.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

/// Edits a copy of `spec`'s root object with `f` and puts the copy in place only when `f`
/// succeeds, so a refused spec is left exactly as it was. `not_object` turns the error for a
/// spec that is not a JSON object into the caller's.
pub(crate) fn edit<T, E>(
    spec: &mut Value,
    not_object: impl FnOnce(SpecError) -> E,
    f: impl FnOnce(&mut Map<String, Value>) -> Result<T, E>,
) -> Result<T, E> {
    let mut work = spec.clone();
    let root = work
        .as_object_mut()
        .ok_or(SpecError::NotAnObject)
        .map_err(not_object)?;
    let out = f(root)?;
    *spec = work;
    Ok(out)
}

/// Replaces the array under `key` with `items`.
pub(crate) fn set_string_list(parent: &mut Map<String, Value>, key: &str, items: &[String]) {
    parent.insert(
        key.to_owned(),
        Value::Array(items.iter().cloned().map(Value::String).collect()),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The object `v` is (the tests of the modules that edit the spec build theirs with it).
    pub(crate) fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn object_entry_creates_absent_and_null_members() {
        let mut m = map(json!({"a": null}));
        object_entry(&mut m, "a", "a")
            .unwrap()
            .insert("x".into(), json!(1));
        object_entry(&mut m, "b", "b")
            .unwrap()
            .insert("y".into(), json!(2));
        assert_eq!(Value::Object(m), json!({"a": {"x": 1}, "b": {"y": 2}}));
    }

    #[test]
    fn object_entry_refuses_a_non_object() {
        let mut m = map(json!({"linux": [1]}));
        let err = object_entry(&mut m, "linux", "linux").unwrap_err();
        assert_eq!(err.to_string(), "spec: linux: expected an object");
    }

    #[test]
    fn string_list_reads_absent_as_empty_and_refuses_mixed_arrays() {
        let m = map(json!({"ok": ["a", "b"], "bad": ["a", 1], "null": null}));
        assert_eq!(string_list(&m, "ok", "ok").unwrap(), ["a", "b"]);
        assert!(string_list(&m, "absent", "absent").unwrap().is_empty());
        assert!(string_list(&m, "null", "null").unwrap().is_empty());
        let err = string_list(&m, "bad", "linux.bad").unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec: linux.bad: expected an array of strings"
        );
    }
}
