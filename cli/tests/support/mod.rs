//! What the cli's test suites share: running the `palisade` binary and checking how it ended.

#![allow(dead_code)]

use std::process::{Command, Output};

/// The `palisade` binary Cargo built for these tests.
pub const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

/// Runs `cmd`, which must succeed; its output, or a failed test naming the command and its
/// stderr.
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, which must exit with status 1 (palisade's answer to bad input); its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Asserts that `text` holds `part`, showing the whole text when it does not.
pub fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}
