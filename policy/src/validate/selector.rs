//! Checks on `spec.selector`: labels, expressions and container name expressions.

use crate::model::Scope;
use crate::raw::RawSelector;
use crate::selector::{
    compile_regex, ContainerNames, Expression, Operator, Selector, CONTAINER_NAME_KEY,
    LABEL_EXPRESSION_KEY,
};

use super::Validator;

impl Validator<'_> {
    pub(super) fn selector(&mut self, s: Option<&RawSelector>) -> Selector {
        let mut out = Selector::default();
        let Some(s) = s else {
            // An inline pod policy without a selector naturally covers its own pod.
            if *self.ctx.scope == Scope::Namespace {
                self.warn(
                    "spec.selector",
                    "is missing: the policy applies to every container in its namespace",
                );
            }
            return out;
        };
        let limits = self.ctx.limits;
        if let Some(labels) = &s.match_labels {
            let at = "spec.selector.matchLabels";
            self.over_count(at, labels.len(), "labels", limits.max_list_len);
            for (k, v) in labels {
                if k.trim().is_empty() {
                    self.error(at, "label keys must not be empty");
                } else if k.len() > limits.max_string_len || v.len() > limits.max_string_len {
                    self.error(
                        &format!("{at}.{k}"),
                        format!("is longer than {} bytes", limits.max_string_len),
                    );
                } else {
                    if k == CONTAINER_NAME_KEY {
                        self.container_names(v, &format!("{at}.{k}"));
                    }
                    out.match_labels.insert(k.clone(), v.clone());
                }
            }
        }
        let exprs = s.match_expressions.as_deref().unwrap_or_default();
        let at = "spec.selector.matchExpressions";
        if self.over_count(at, exprs.len(), "expressions", limits.max_list_len) {
            return out;
        }
        for (i, e) in exprs.iter().enumerate() {
            let at = format!("spec.selector.matchExpressions[{i}]");
            let key = match e.key.as_deref().map(str::trim) {
                None | Some("") => {
                    self.error(&format!("{at}.key"), "is required");
                    None
                }
                Some(k) => Some(k.to_string()),
            };
            let operator = match e.operator.as_deref() {
                None => {
                    self.error(&format!("{at}.operator"), "is required");
                    None
                }
                Some("In") => Some(Operator::In),
                Some("NotIn") => Some(Operator::NotIn),
                Some(other) => {
                    self.error(
                        &format!("{at}.operator"),
                        format!("unsupported operator {other}, expected In or NotIn"),
                    );
                    None
                }
            };
            let values = e.values.as_deref().unwrap_or_default();
            if values.is_empty() {
                self.error(&format!("{at}.values"), "must list at least one value");
            } else if self.over_count(
                &format!("{at}.values"),
                values.len(),
                "values",
                limits.max_list_len,
            ) {
                continue;
            }
            let (Some(key), Some(operator)) = (key, operator) else {
                continue;
            };
            if key == LABEL_EXPRESSION_KEY {
                let mut labels = Vec::new();
                for (j, v) in values.iter().enumerate() {
                    match v.split_once('=') {
                        Some((k, val)) if !k.trim().is_empty() => {
                            if k.trim() == CONTAINER_NAME_KEY {
                                self.container_names(val, &format!("{at}.values[{j}]"));
                            }
                            labels.push((k.trim().to_string(), val.trim().to_string()));
                        }
                        _ => {
                            self.error(&format!("{at}.values[{j}]"), "must have the form key=value")
                        }
                    }
                }
                out.match_expressions
                    .push(Expression::Labels { operator, labels });
            } else {
                if key == CONTAINER_NAME_KEY {
                    for (j, v) in values.iter().enumerate() {
                        self.container_names(v, &format!("{at}.values[{j}]"));
                    }
                }
                out.match_expressions.push(Expression::Key {
                    key,
                    operator,
                    values: values.to_vec(),
                });
            }
        }
        out
    }

    pub(super) fn container_names(&mut self, value: &str, at: &str) {
        if let ContainerNames::Regex(pattern) = ContainerNames::classify(value) {
            if let Err(e) = compile_regex(pattern) {
                // The library's message spans lines (pattern, caret, reason): keep the reason.
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or("").trim();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                self.error(at, format!("invalid regular expression: {reason}"));
            }
        }
    }
}
