//! Diagnostics: every problem found in a policy input, each with the path of the field at fault.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a problem is: errors reject the input, warnings are reported alongside the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The policy is accepted; the problem is worth a look.
    Warning,
    /// The input is rejected.
    Error,
}

/// A position in the input bytes, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem with one field of one YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub level: Level,
    /// Index of the YAML document in a multi-document input, from 0.
    pub document: usize,
    /// Field path in the policy, such as `spec.file.matchPaths[2].path`; `.` for the whole document.
    pub path: String,
    pub message: String,
    /// Where the parser stopped, for syntax and structure errors; validation problems have none.
    pub location: Option<Location>,
}

impl Diagnostic {
    pub fn error(document: usize, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            document,
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }

    pub fn warning(document: usize, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            ..Self::error(document, path, message)
        }
    }

    #[must_use]
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(
            f,
            "{level}: document {}: {}: {}",
            self.document, self.path, self.message
        )?;
        if let Some(loc) = self.location {
            write!(f, " (line {}, column {})", loc.line, loc.column)?;
        }
        Ok(())
    }
}

/// The problems that made an input unacceptable, warnings included, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", render(.items))]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

fn render(items: &[Diagnostic]) -> String {
    let errors = items.iter().filter(|d| d.is_error()).count();
    let mut out = format!("policy input rejected: {errors} error(s)");
    for d in items {
        out.push_str("\n  ");
        out.push_str(&d.to_string());
    }
    out
}

impl Diagnostics {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The first diagnostic at `path`, which is what most callers and tests look for.
    pub fn find(&self, path: &str) -> Option<&Diagnostic> {
        self.items.iter().find(|d| d.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_document_path_message_and_location() {
        let d = Diagnostic::error(2, "spec.severity", "must be between 1 and 10")
            .at(Some(Location { line: 4, column: 3 }));
        assert_eq!(
            d.to_string(),
            "error: document 2: spec.severity: must be between 1 and 10 (line 4, column 3)"
        );
        let w = Diagnostic::warning(0, "spec.file", "w");
        assert_eq!(w.to_string(), "warning: document 0: spec.file: w");
    }

    #[test]
    fn diagnostics_count_errors_and_render_each_item() {
        let ds = Diagnostics {
            items: vec![
                Diagnostic::error(0, "a", "bad"),
                Diagnostic::warning(0, "b", "meh"),
            ],
        };
        assert!(ds.has_errors());
        assert_eq!(ds.errors().count(), 1);
        assert_eq!(ds.warnings().count(), 1);
        assert_eq!(ds.find("b").map(|d| d.message.as_str()), Some("meh"));
        let text = ds.to_string();
        assert!(text.starts_with("policy input rejected: 1 error(s)"));
        assert!(text.contains("error: document 0: a: bad"));
        assert!(text.contains("warning: document 0: b: meh"));
    }
}
