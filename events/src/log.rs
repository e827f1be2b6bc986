//! The event log's file names in its directory: the live file and its rotated copies.
//!
//! The shim writes and rotates the log; `palisade events` reads it back in order. Both name the
//! files through these functions, which do no I/O.

/// The log's name inside the log directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// The name of the `n`th rotated copy (`events.jsonl.1` is the newest).
pub fn rotated_name(n: u32) -> String {
    format!("{EVENTS_FILE}.{n}")
}

/// Which rotated copy a file name is, if it is one.
pub fn rotated_index(name: &str) -> Option<u64> {
    name.strip_prefix(EVENTS_FILE)?
        .strip_prefix('.')?
        .parse::<u64>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_round_trip() {
        assert_eq!(rotated_name(3), "events.jsonl.3");
        assert_eq!(rotated_index(&rotated_name(3)), Some(3));
        assert_eq!(rotated_index(EVENTS_FILE), None);
        assert_eq!(rotated_index("events.jsonl.x"), None);
        assert_eq!(rotated_index("other.jsonl.1"), None);
    }
}
