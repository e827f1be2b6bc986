//! Masked and read-only paths: the parts of /proc and /sys a container must not read or
//! write, merged into `linux.maskedPaths` and `linux.readonlyPaths`.

use serde_json::{Map, Value};

use crate::spec::{self, SpecError};

/// Paths runc hides (a bind of /dev/null, or an empty read-only tmpfs for directories):
/// kernel memory, keyrings, timers and hardware details that leak the host or other tenants.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc remounts read-only: kernel tunables and triggers that act on the whole host.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Ensures the array `linux[key]` holds every path of `required`: existing entries keep
/// their order, missing ones are appended, duplicates are removed. Returns the paths added.
pub fn merge(
    linux: &mut Map<String, Value>,
    key: &str,
    required: &[&str],
) -> Result<Vec<String>, SpecError> {
    let existing = spec::string_list(linux, key, &format!("linux.{key}"))?;
    let mut merged: Vec<String> = Vec::with_capacity(existing.len() + required.len());
    for path in existing {
        if !merged.contains(&path) {
            merged.push(path);
        }
    }
    let mut added = Vec::new();
    for path in required {
        if !merged.iter().any(|p| p == path) {
            merged.push((*path).to_owned());
            added.push((*path).to_owned());
        }
    }
    spec::set_string_list(linux, key, &merged);
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::map as linux;
    use serde_json::json;

    #[test]
    fn merge_keeps_existing_order_appends_missing_and_drops_duplicates() {
        let mut l = linux(json!({"maskedPaths": ["/custom", "/proc/kcore", "/custom"]}));
        let added = merge(&mut l, "maskedPaths", &["/proc/kcore", "/proc/keys"]).unwrap();
        assert_eq!(added, ["/proc/keys"]);
        assert_eq!(
            l["maskedPaths"],
            json!(["/custom", "/proc/kcore", "/proc/keys"])
        );
    }

    #[test]
    fn merge_creates_the_array_when_absent() {
        let mut l = Map::new();
        let added = merge(&mut l, "readonlyPaths", &READONLY_PATHS).unwrap();
        assert_eq!(added, READONLY_PATHS);
        assert_eq!(l["readonlyPaths"], json!(READONLY_PATHS));
    }

    #[test]
    fn merge_twice_adds_nothing_the_second_time() {
        let mut l = Map::new();
        merge(&mut l, "maskedPaths", &MASKED_PATHS).unwrap();
        let again = merge(&mut l, "maskedPaths", &MASKED_PATHS).unwrap();
        assert!(again.is_empty());
        assert_eq!(
            l["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
    }

    #[test]
    fn merge_refuses_a_malformed_array() {
        let mut l = linux(json!({"maskedPaths": "/proc/kcore"}));
        let err = merge(&mut l, "maskedPaths", &MASKED_PATHS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec: linux.maskedPaths: expected an array of strings"
        );
    }
}
