//! Source positions of fields, so that validation problems point at a line as well as a path.
//!
//! serde_yaml does not expose where a value came from, so a second, event-level parser indexes
//! the field paths of each document. It runs only on inputs the budget pass already accepted and
//! only when there is a problem to place; if it cannot follow the input, problems keep their path
//! and simply have no position.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use crate::diag::Location;

/// Field path to position, per YAML document.
#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    documents: Vec<HashMap<String, Location>>,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while waiting for a key.
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn location(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent == "." {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl SpanIndex {
    pub(crate) fn build(bytes: &[u8]) -> Self {
        let mut index = Self::default();
        let Ok(text) = std::str::from_utf8(bytes) else {
            return index;
        };
        let mut stack: Vec<Frame> = Vec::new();
        let mut current: Option<HashMap<String, Location>> = None;
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            match event {
                Event::DocumentStart(_) => {
                    stack.clear();
                    current = Some(HashMap::new());
                }
                Event::DocumentEnd => {
                    if let Some(doc) = current.take() {
                        index.documents.push(doc);
                    }
                }
                Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..) => {
                    let Some(doc) = current.as_mut() else { break };
                    let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
                    // Where this node sits; a mapping key is recorded instead and yields no node.
                    let path = match stack.last_mut() {
                        None => Some(".".to_string()),
                        Some(Frame::Seq { path, next }) => {
                            let p = format!("{path}[{next}]");
                            *next += 1;
                            doc.entry(p.clone()).or_insert_with(|| location(&span));
                            Some(p)
                        }
                        Some(Frame::Map { path, key }) => match key.take() {
                            Some(k) => Some(child(path, &k)),
                            None => {
                                let k = match &event {
                                    Event::Scalar(v, ..) => v.to_string(),
                                    _ => "?".to_string(),
                                };
                                doc.entry(child(path, &k))
                                    .or_insert_with(|| location(&span));
                                *key = Some(k);
                                if opens {
                                    // A collection used as a key: index its insides under `?`.
                                    None
                                } else {
                                    continue;
                                }
                            }
                        },
                    };
                    if opens {
                        let path = path.unwrap_or_else(|| "?".to_string());
                        stack.push(if matches!(event, Event::MappingStart(..)) {
                            Frame::Map { path, key: None }
                        } else {
                            Frame::Seq { path, next: 0 }
                        });
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            }
        }
        index
    }

    /// The position of `path` in `document`, or of its closest indexed ancestor.
    pub(crate) fn locate(&self, document: usize, path: &str) -> Option<Location> {
        let doc = self.documents.get(document)?;
        let mut p = path;
        loop {
            if let Some(loc) = doc.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_items_per_document() {
        let yaml = "a: 1\nspec:\n  file:\n    matchPaths:\n    - path: /x\n    - {path: y, readOnly: true}\n---\nb: [1, 2]\n";
        let idx = SpanIndex::build(yaml.as_bytes());
        let at = |doc, path| idx.locate(doc, path).map(|l| (l.line, l.column));
        assert_eq!(at(0, "a"), Some((1, 1)));
        assert_eq!(at(0, "spec.file"), Some((3, 3)));
        assert_eq!(at(0, "spec.file.matchPaths[0].path"), Some((5, 7)));
        assert_eq!(at(0, "spec.file.matchPaths[1].readOnly"), Some((6, 17)));
        // Unknown paths fall back to the closest ancestor.
        assert_eq!(at(0, "spec.file.matchPaths[1].nope"), Some((6, 7)));
        assert_eq!(at(1, "b[1]"), Some((8, 8)));
        assert_eq!(at(2, "b"), None);
    }

    #[test]
    fn survives_odd_input() {
        let complex_key = SpanIndex::build(b"? [a, b]\n: c\nd: e\n");
        assert_eq!(complex_key.locate(0, "d").map(|l| l.line), Some(3));
        let bad = SpanIndex::build(&[0xff, 0xfe]);
        assert!(bad.locate(0, "a").is_none());
        let broken = SpanIndex::build(b"a: 1\nb: [\n");
        assert!(broken.locate(0, "a").is_none());
    }
}
