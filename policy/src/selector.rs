//! Which policies apply to which container: label selectors and the workload they are matched against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Selector key KubeArmor reserves for the container name; its value is a name or `[a, b]`.
pub const CONTAINER_NAME_KEY: &str = "kubearmor.io/container.name";

/// Expression key KubeArmor uses to match whole `key=value` labels.
pub const LABEL_EXPRESSION_KEY: &str = "label";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expression {
    /// KubeArmor form, `key: label`: `In` needs one of the `key=value` labels, `NotIn` none of them.
    Labels {
        operator: Operator,
        labels: Vec<(String, String)>,
    },
    /// Kubernetes form: `key` is a label key; `In` needs its value among `values`, `NotIn` not
    /// (a missing label counts as not among them).
    Key {
        key: String,
        operator: Operator,
        values: Vec<String>,
    },
}

/// A validated `spec.selector`; every part must match (an empty selector matches every container).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Expression>,
}

/// The container a policy set is being chosen for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub pod_name: String,
    pub container_name: String,
    pub image: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// The label value a selector sees: pod labels, plus the container name under its reserved key
    /// unless the pod sets that label itself.
    fn label(&self, key: &str) -> Option<&str> {
        match self.labels.get(key) {
            Some(v) => Some(v),
            None if key == CONTAINER_NAME_KEY => Some(&self.container_name),
            None => None,
        }
    }
}

/// Compiled-size bound for container name expressions, which come from untrusted policies.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a `kubearmor.io/container.name` value is read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ContainerNames<'a> {
    /// `[a, b]`: any of these names.
    List(Vec<&'a str>),
    /// Contains regular expression syntax (never valid in a container name): matched like
    /// KubeArmor does, unanchored unless the expression anchors itself.
    Regex(&'a str),
    /// A plain name.
    Exact(&'a str),
}

impl<'a> ContainerNames<'a> {
    pub(crate) fn classify(wanted: &'a str) -> Self {
        let trimmed = wanted.trim();
        if let Some(list) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            return Self::List(list.split(',').map(str::trim).collect());
        }
        if trimmed.chars().any(|c| "^$.*+?()[]{}|\\".contains(c)) {
            return Self::Regex(trimmed);
        }
        Self::Exact(trimmed)
    }
}

pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Matches the container name against a name, `[name1, name2]` or a regular expression.
fn container_name_matches(wanted: &str, actual: &str) -> bool {
    match ContainerNames::classify(wanted) {
        ContainerNames::List(names) => names.contains(&actual),
        // Validation rejects expressions that do not compile, so a failure here matches nothing.
        ContainerNames::Regex(pattern) => compile_regex(pattern).is_ok_and(|r| r.is_match(actual)),
        ContainerNames::Exact(name) => name == actual,
    }
}

fn label_matches(w: &Workload, key: &str, wanted: &str) -> bool {
    if key == CONTAINER_NAME_KEY && !w.labels.contains_key(key) {
        return container_name_matches(wanted, &w.container_name);
    }
    w.label(key) == Some(wanted)
}

impl Expression {
    pub fn matches(&self, w: &Workload) -> bool {
        match self {
            Self::Labels { operator, labels } => {
                let any = labels.iter().any(|(k, v)| label_matches(w, k, v));
                match operator {
                    Operator::In => any,
                    Operator::NotIn => !any,
                }
            }
            Self::Key {
                key,
                operator,
                values,
            } => {
                let any = values.iter().any(|v| label_matches(w, key, v));
                match operator {
                    Operator::In => any,
                    Operator::NotIn => !any,
                }
            }
        }
    }
}

impl Selector {
    pub fn matches(&self, w: &Workload) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| label_matches(w, k, v))
            && self.match_expressions.iter().all(|e| e.matches(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            namespace: "shop".into(),
            pod_name: "web-0".into(),
            container_name: "nginx".into(),
            image: "nginx:1.27".into(),
            labels: [("app", "web"), ("tier", "frontend")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_must_all_match() {
        let w = workload();
        let mut s = Selector {
            match_labels: labels(&[("app", "web")]),
            ..Selector::default()
        };
        assert!(s.matches(&w));
        s.match_labels = labels(&[("app", "web"), ("tier", "backend")]);
        assert!(!s.matches(&w));
        s.match_labels = labels(&[("missing", "x")]);
        assert!(!s.matches(&w));
        assert!(Selector::default().matches(&w));
    }

    #[test]
    fn container_name_key_matches_name_or_list() {
        let w = workload();
        let one = Selector {
            match_labels: labels(&[(CONTAINER_NAME_KEY, "nginx")]),
            ..Selector::default()
        };
        assert!(one.matches(&w));
        let list = Selector {
            match_labels: labels(&[(CONTAINER_NAME_KEY, "[sidecar, nginx]")]),
            ..Selector::default()
        };
        assert!(list.matches(&w));
        let other = Selector {
            match_labels: labels(&[(CONTAINER_NAME_KEY, "[sidecar, envoy]")]),
            ..Selector::default()
        };
        assert!(!other.matches(&w));
    }

    #[test]
    fn container_name_key_accepts_regular_expressions() {
        let w = workload();
        let sel = |v: &str| Selector {
            match_labels: labels(&[(CONTAINER_NAME_KEY, v)]),
            ..Selector::default()
        };
        assert!(sel(".*").matches(&w));
        assert!(sel("^ngi.x$").matches(&w));
        assert!(!sel("^web-[0-9]+$").matches(&w));
        assert_eq!(
            ContainerNames::classify("^web-[0-9]+$"),
            ContainerNames::Regex("^web-[0-9]+$")
        );
        assert_eq!(
            ContainerNames::classify(" nginx "),
            ContainerNames::Exact("nginx")
        );
        assert_eq!(
            ContainerNames::classify("[a, b]"),
            ContainerNames::List(vec!["a", "b"])
        );
    }

    #[test]
    fn kubearmor_label_expressions() {
        let w = workload();
        let in_expr = Expression::Labels {
            operator: Operator::In,
            labels: vec![
                ("app".into(), "db".into()),
                ("tier".into(), "frontend".into()),
            ],
        };
        assert!(in_expr.matches(&w));
        let not_in = Expression::Labels {
            operator: Operator::NotIn,
            labels: vec![("app".into(), "web".into())],
        };
        assert!(!not_in.matches(&w));
        let not_in_other = Expression::Labels {
            operator: Operator::NotIn,
            labels: vec![("app".into(), "db".into())],
        };
        assert!(not_in_other.matches(&w));
    }

    #[test]
    fn kubernetes_key_expressions() {
        let w = workload();
        let e = Expression::Key {
            key: "tier".into(),
            operator: Operator::In,
            values: vec!["backend".into(), "frontend".into()],
        };
        assert!(e.matches(&w));
        let missing = Expression::Key {
            key: "env".into(),
            operator: Operator::NotIn,
            values: vec!["prod".into()],
        };
        assert!(missing.matches(&w));
        let missing_in = Expression::Key {
            key: "env".into(),
            operator: Operator::In,
            values: vec!["prod".into()],
        };
        assert!(!missing_in.matches(&w));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let w = workload();
        let s = Selector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![Expression::Labels {
                operator: Operator::NotIn,
                labels: vec![("tier".into(), "frontend".into())],
            }],
        };
        assert!(!s.matches(&w));
    }
}
