//! Checks on paths, directories, globs and `fromSource` entries.

use crate::model::Source;
use crate::raw::RawSource;

use super::Validator;

/// Longest file name component Linux accepts (`NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PathKind {
    File,
    Dir,
}

/// A glob made only of separators and wildcards, spanning segments: it matches every path.
pub(super) fn matches_everything(pattern: &str) -> bool {
    pattern.chars().all(|c| c == '/' || c == '*') && (pattern.contains("**") || pattern == "*")
}

impl Validator<'_> {
    /// The checks every path and pattern gets first: not empty, not over the length limit
    /// (false for these two: nothing more is worth checking), no NUL byte.
    fn path_text(&mut self, s: &str, at: &str) -> bool {
        if s.is_empty() {
            self.error(at, "must not be empty");
            return false;
        }
        if self.over_length(at, s.len(), self.ctx.limits.max_path_len) {
            return false;
        }
        if s.contains('\0') {
            self.error(at, "must not contain NUL bytes");
        }
        true
    }

    pub(super) fn abs_path(&mut self, s: &str, at: &str, kind: PathKind) -> Option<String> {
        let before = self.errors;
        if !self.path_text(s, at) {
            return None;
        }
        if !s.starts_with('/') {
            self.error(at, "must be absolute");
        }
        match kind {
            PathKind::File if s.ends_with('/') => self.error(at, "must not end with /"),
            PathKind::Dir if !s.ends_with('/') => self.error(at, "must end with /"),
            _ => {}
        }
        let inner = s.trim_start_matches('/').trim_end_matches('/');
        let segments: Vec<&str> = if inner.is_empty() {
            Vec::new()
        } else {
            inner.split('/').collect()
        };
        if segments.contains(&"..") {
            self.error(at, "must not contain .. segments");
        }
        if segments.iter().any(|seg| seg.len() > NAME_MAX) {
            self.error(at, format!("has a segment longer than {NAME_MAX} bytes"));
        }
        if segments.iter().any(|seg| seg.is_empty() || *seg == ".") || s.starts_with("//") {
            self.warn(at, "is not normalized (empty or . segments)");
        }
        (self.errors == before).then(|| s.to_string())
    }

    pub(super) fn pattern(&mut self, s: &str, at: &str) -> Option<String> {
        let before = self.errors;
        if !self.path_text(s, at) {
            return None;
        }
        if matches_everything(s) {
            self.error(at, "matches every path; name what to match");
        } else if !s.starts_with('/') {
            self.error(at, "must be absolute");
        }
        if s.split('/').any(|seg| seg == "..") {
            self.error(at, "must not contain .. segments");
        }
        (self.errors == before).then(|| s.to_string())
    }

    pub(super) fn sources(&mut self, list: Option<&[RawSource]>, at: &str) -> Vec<Source> {
        let list = list.unwrap_or_default();
        let at = format!("{at}.fromSource");
        if self.over_count(&at, list.len(), "entries", self.ctx.limits.max_list_len) {
            return Vec::new();
        }
        let mut out: Vec<Source> = Vec::new();
        for (j, s) in list.iter().enumerate() {
            let sat = format!("{at}[{j}]");
            let source = match (&s.path, &s.dir) {
                (Some(p), None) => {
                    if s.recursive.is_some() {
                        self.error(&format!("{sat}.recursive"), "applies only to dir");
                    }
                    self.abs_path(p, &format!("{sat}.path"), PathKind::File)
                        .map(Source::Path)
                }
                (None, Some(d)) => {
                    self.abs_path(d, &format!("{sat}.dir"), PathKind::Dir)
                        .map(|dir| Source::Directory {
                            dir,
                            recursive: s.recursive.unwrap_or(false),
                        })
                }
                (Some(_), Some(_)) => {
                    self.error(&sat, "set either path or dir, not both");
                    None
                }
                (None, None) => {
                    self.error(&sat, "must set path or dir");
                    None
                }
            };
            if let Some(source) = source {
                if let Some(k) = out.iter().position(|o| *o == source) {
                    self.warn(&sat, format!("duplicates {at}[{k}]"));
                } else {
                    out.push(source);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_patterns() {
        for (pattern, want) in [
            ("*", true),
            ("/**", true),
            ("**", true),
            ("/*/**", true),
            ("/*", false),
            ("/**/*.sh", false),
            ("/etc/**", false),
        ] {
            assert_eq!(matches_everything(pattern), want, "{pattern}");
        }
    }
}
