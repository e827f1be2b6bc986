//! The commands of CRI execs a workload's runtime ran while learning: kept whole (the path
//! name the runtime ran, then the arguments as given), so that an exec probe of a multi-call
//! binary (`busybox cat FILE`) allows that command and not every applet of the same file.

use std::collections::BTreeSet;

use crate::fold;
use crate::record::{Category, Recording, MAX_COMMANDS, MAX_COMMAND_BYTES, MAX_COMMAND_WORDS};

/// Whether `argv` is small enough to keep: at most `MAX_COMMAND_WORDS` words of at most
/// `MAX_COMMAND_BYTES` bytes together.
pub fn bounded(argv: &[String]) -> bool {
    argv.len() <= MAX_COMMAND_WORDS
        && argv.iter().map(String::len).sum::<usize>() <= MAX_COMMAND_BYTES
}

/// A command as a shell would read it back: words with characters other than letters, digits
/// and `/._-=:,+@%` single-quoted. For messages and `palisade profile show`.
pub fn quoted(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command as an example of an unrecognized observation (which cuts it short).
fn shown(argv: &[String]) -> String {
    format!("command {:?}", argv.join(" "))
}

impl Recording {
    /// Adds the command of one CRI exec. A recording that does not hold commands (read from a
    /// document written before they were recorded) stays without them.
    pub(crate) fn add_command(&mut self, argv: &[String]) {
        let valid = argv.first().is_some_and(|p| fold::valid_file_path(p)) && bounded(argv);
        let Some(commands) = &self.runtime_commands else {
            return;
        };
        if !valid {
            self.unrecognized(shown(argv));
            return;
        }
        if commands.contains(argv) {
            return;
        }
        if commands.len() >= MAX_COMMANDS {
            self.count_overflow(Category::RuntimeCommands, 1);
            return;
        }
        if let Some(commands) = &mut self.runtime_commands {
            commands.insert(argv.to_vec());
        }
    }

    /// Re-imposes the commands' bounds (after a merge, or on a document that may have been
    /// edited), in their canonical order.
    pub(crate) fn canonical_commands(&mut self) {
        let Some(commands) = self.runtime_commands.take() else {
            return;
        };
        self.runtime_commands = Some(BTreeSet::new());
        for argv in commands {
            self.add_command(&argv);
        }
    }
}
