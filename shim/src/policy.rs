//! The policies that apply to a container: the configuration's policy directory plus the pod's
//! inline annotation, selected for the container and compiled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use palisade_policy::{
    compile_for, parse_pod_annotation, parse_policies, Action, CompileOptions, CompiledPolicy,
    DenyPosture, Limits, Policy, RuleMeta, Workload,
};
use serde_json::Value;

use crate::cri::CriContainer;

/// Loading or selecting a container's policies failed; the container must not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path}: {diagnostics}")]
    File {
        path: PathBuf,
        diagnostics: palisade_policy::Diagnostics,
    },
    #[error("pod annotation {annotation}: {diagnostics}")]
    Annotation {
        annotation: &'static str,
        diagnostics: palisade_policy::Diagnostics,
    },
    #[error("policy {policy} selects by pod labels, which could not be read: {reason}")]
    Labels { policy: String, reason: String },
}

/// The pod's labels as far as the shim could learn them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodLabels {
    Known(BTreeMap<String, String>),
    /// containerd could not be asked; a policy that selects by labels refuses the container.
    Unknown(String),
}

/// Reads every `*.yaml`/`*.yml` file of `dir` (sorted, so errors are reported in a stable order).
pub fn load_dir(dir: &Path) -> Result<Vec<Policy>, PolicyError> {
    let dir_err = |source| PolicyError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut policies = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|source| PolicyError::Dir {
            path: path.clone(),
            source,
        })?;
        let parsed = parse_policies(&bytes).map_err(|diagnostics| PolicyError::File {
            path: path.clone(),
            diagnostics,
        })?;
        for w in &parsed.warnings {
            tracing::warn!("policy file {}: {w}", path.display());
        }
        policies.extend(parsed.policies);
    }
    Ok(policies)
}

/// The policies that may apply to a container, loaded before the pod's labels are known:
/// containerd is asked for them only when one of these policies selects by labels.
#[derive(Debug)]
pub struct Candidates {
    container: String,
    workload: Workload,
    policies: Vec<Policy>,
    /// The learned profile's policies among `policies`, and whether they only audit.
    learned: Vec<palisade_policy::PolicyId>,
    learned_audit: bool,
}

/// A learned profile's policies for a container (`crate::profile_stage`), and whether they
/// run in audit (what they would deny is reported and permitted) rather than enforced.
#[derive(Debug)]
pub struct LearnedPolicies {
    pub policies: Vec<Policy>,
    pub audit: bool,
}

/// Loads the configuration's policy directory and the pod's inline annotation for a container;
/// `None` for a pod's sandbox container or when there is no policy at all.
pub fn candidates_for(
    cri: &CriContainer,
    spec: &Value,
    dir: Option<&Path>,
) -> Result<Option<Candidates>, PolicyError> {
    if cri.is_sandbox() {
        return Ok(None);
    }
    let container = cri.id.as_str();
    let workload = Workload::from(cri);
    let mut policies = match dir {
        Some(d) => load_dir(d)?,
        None => Vec::new(),
    };
    if let Some(inline) = spec["annotations"][palisade_policy::POD_POLICY_ANNOTATION].as_str() {
        let parsed = parse_pod_annotation(
            &workload.namespace,
            &workload.pod_name,
            inline,
            &Limits::default(),
        )
        .map_err(|diagnostics| PolicyError::Annotation {
            annotation: palisade_policy::POD_POLICY_ANNOTATION,
            diagnostics,
        })?;
        for w in &parsed.warnings {
            tracing::warn!(container = %container, "pod policy: {w}");
        }
        policies.extend(parsed.policies);
    }
    if policies.is_empty() {
        return Ok(None);
    }
    Ok(Some(Candidates {
        container: container.to_string(),
        workload,
        policies,
        learned: Vec::new(),
        learned_audit: false,
    }))
}

/// Adds a learned profile's policies to a container's candidates (which may be none yet).
pub fn with_learned(
    candidates: Option<Candidates>,
    cri: &CriContainer,
    learned: LearnedPolicies,
) -> Option<Candidates> {
    let mut c = candidates.unwrap_or_else(|| Candidates {
        container: cri.id.clone(),
        workload: Workload::from(cri),
        policies: Vec::new(),
        learned: Vec::new(),
        learned_audit: false,
    });
    c.learned
        .extend(learned.policies.iter().map(|p| p.id.clone()));
    c.learned_audit = learned.audit;
    c.policies.extend(learned.policies);
    (!c.policies.is_empty()).then_some(c)
}

/// The first active policy of `namespace` that selects by pod labels (or expressions on
/// them); a policy of another namespace never applies to the container, so never needs them.
fn label_selector<'a>(policies: &'a [Policy], namespace: &str) -> Option<&'a Policy> {
    policies.iter().find(|p| {
        p.active
            && p.id.namespace == namespace
            && (!p.selector.match_labels.is_empty() || !p.selector.match_expressions.is_empty())
    })
}

impl Candidates {
    /// Whether selecting needs the pod's labels (a lookup over containerd's API).
    pub fn need_labels(&self) -> bool {
        label_selector(&self.policies, &self.workload.namespace).is_some()
    }

    /// Selects and compiles the policies for the container, `None` when none selects it. With
    /// `audit` (a `mode = "audit"` configuration) every Block becomes Audit, allow-lists
    /// included: what the policies would deny is reported and permitted. `labels` matter only
    /// when [`Candidates::need_labels`]; unknown labels then refuse the container.
    pub fn select(
        self,
        labels: &PodLabels,
        audit: bool,
    ) -> Result<Option<CompiledPolicy>, PolicyError> {
        let Candidates {
            container,
            mut workload,
            mut policies,
            learned,
            learned_audit,
        } = self;
        match labels {
            PodLabels::Known(l) => workload.labels = l.clone(),
            PodLabels::Unknown(reason) => {
                if let Some(p) = label_selector(&policies, &workload.namespace) {
                    return Err(PolicyError::Labels {
                        policy: p.id.to_string(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let mut options = CompileOptions::default();
        if audit {
            audit_only(&mut policies);
            options.deny_posture = DenyPosture::Audit;
        }
        let mut compiled = compile_for(&policies, &workload, &options);
        if learned_audit {
            learned_in_audit(&mut compiled, &learned);
        }
        if compiled.rule_count() == 0 {
            return Ok(None);
        }
        tracing::info!(container = %container, policies = ?compiled.policies, rules = compiled.rule_count(), "policies selected");
        Ok(Some(compiled))
    }
}

/// A learned profile in audit: each kind it allow-lists reports, rather than refuses, what
/// it does not list, unless a user's own policy allow-lists that kind too (whose Block posture
/// stays). The profile's rules are all Allow: nothing else of them refuses.
fn learned_in_audit(compiled: &mut CompiledPolicy, learned: &[palisade_policy::PolicyId]) {
    fn only_learned<R>(
        rules: &[palisade_policy::CompiledRule<R>],
        meta: fn(&R) -> &RuleMeta,
        learned: &[palisade_policy::PolicyId],
    ) -> bool {
        let allows = |r: &&palisade_policy::CompiledRule<R>| meta(&r.rule).action == Action::Allow;
        rules
            .iter()
            .filter(allows)
            .all(|r| learned.contains(&r.policy))
    }
    let p = &mut compiled.posture;
    // The same for each kind: its rules are of a different type, its posture a field by name.
    macro_rules! soften {
        ($($kind:ident),+) => {$(
            if p.$kind == Action::Block && only_learned(&compiled.$kind, |r| &r.meta, learned) {
                p.$kind = Action::Audit;
            }
        )+};
    }
    soften!(file, network, capabilities, syscalls);
    // An exec allow-list is not in the monitor (an audited one would refuse the container at
    // Create); the profile's governor reports every exec the profile does not list as a
    // departure, so the learned process rules are left out rather than claimed as audited.
    if p.process == Action::Block && only_learned(&compiled.process, |r| &r.meta, learned) {
        compiled
            .process
            .retain(|r| !(r.rule.meta.action == Action::Allow && learned.contains(&r.policy)));
        p.process = Action::Allow;
    }
}

/// Turns every Block rule into an Audit rule.
fn audit_only(policies: &mut [Policy]) {
    fn downgrade(meta: &mut RuleMeta) {
        if meta.action == Action::Block {
            meta.action = Action::Audit;
        }
    }
    for p in policies {
        p.process.iter_mut().for_each(|r| downgrade(&mut r.meta));
        p.file.iter_mut().for_each(|r| downgrade(&mut r.meta));
        p.network.iter_mut().for_each(|r| downgrade(&mut r.meta));
        p.capabilities
            .iter_mut()
            .for_each(|r| downgrade(&mut r.meta));
        p.syscalls.iter_mut().for_each(|r| downgrade(&mut r.meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_labels() -> PodLabels {
        PodLabels::Known(BTreeMap::new())
    }

    /// What the shim's Create does: load the candidates, then select with the labels.
    fn policy_for(
        container: &str,
        spec: &Value,
        dir: Option<&Path>,
        labels: &PodLabels,
        audit: bool,
    ) -> Result<Option<CompiledPolicy>, PolicyError> {
        match candidates(container, spec, dir)? {
            Some(c) => c.select(labels, audit),
            None => Ok(None),
        }
    }

    /// The candidates for a container with this spec, its identity read as Create reads it.
    fn candidates(
        container: &str,
        spec: &Value,
        dir: Option<&Path>,
    ) -> Result<Option<Candidates>, PolicyError> {
        candidates_for(&CriContainer::of(container, spec), spec, dir)
    }

    fn needs_labels(policy: &str) -> bool {
        candidates("c1", &spec(Some(policy)), None)
            .unwrap()
            .expect("candidates")
            .need_labels()
    }

    #[test]
    fn labels_are_needed_only_by_active_label_selectors_of_the_pods_namespace() {
        assert!(
            !needs_labels(TOKEN_POLICY),
            "an empty selector takes every pod"
        );
        let by_label = TOKEN_POLICY.replace("matchLabels: {}", "matchLabels:\n      app: web");
        assert!(needs_labels(&by_label));
        let by_expression = TOKEN_POLICY.replace(
            "matchLabels: {}",
            "matchExpressions:\n    - key: app\n      operator: In\n      values: [web]",
        );
        assert!(needs_labels(&by_expression));
        let inactive =
            by_label.replace("  action: Block\n", "  action: Block\n  status: Inactive\n");
        assert_ne!(inactive, by_label);
        assert!(
            !needs_labels(&inactive),
            "an inactive policy selects nothing"
        );
        // The annotation's policies take the pod's namespace; a directory may hold others'.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("other.yaml"),
            by_label.replace("namespace: shop", "namespace: other"),
        )
        .unwrap();
        let other = candidates("c1", &spec(None), Some(dir.path()))
            .unwrap()
            .expect("candidates");
        assert!(
            !other.need_labels(),
            "another namespace's policy never applies"
        );
        assert_eq!(
            other
                .select(&PodLabels::Unknown("not read".into()), false)
                .unwrap()
                .map(|c| c.rule_count()),
            None
        );
        assert!(candidates(
            "c1",
            &json!({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}}),
            Some(dir.path())
        )
        .unwrap()
        .is_none());
    }

    const TOKEN_POLICY: &str = r#"apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: block-sa-token
  namespace: shop
spec:
  selector:
    matchLabels: {}
  file:
    matchDirectories:
    - dir: /var/run/secrets/kubernetes.io/serviceaccount/
      recursive: true
  action: Block
"#;

    fn spec(policy: Option<&str>) -> Value {
        let mut ann = json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.container-name": "app",
            "io.kubernetes.cri.image-name": "localhost/app:1",
        });
        if let Some(p) = policy {
            ann["palisade.dev/policy"] = json!(p);
        }
        json!({"annotations": ann, "process": {"args": ["sh"]}})
    }

    #[test]
    fn inline_annotation_policy_is_compiled_for_its_pod() {
        let compiled = policy_for("c1", &spec(Some(TOKEN_POLICY)), None, &no_labels(), false)
            .unwrap()
            .expect("policy selected");
        assert_eq!(compiled.file.len(), 1);
        assert_eq!(
            policy_for("c1", &spec(None), None, &no_labels(), false)
                .unwrap()
                .map(|c| c.rule_count()),
            None
        );
    }

    #[test]
    fn label_selectors_see_the_pods_labels_and_refuse_without_them() {
        let by_label = TOKEN_POLICY.replace("matchLabels: {}", "matchLabels:\n      app: web");
        let labels = |v: &str| PodLabels::Known(BTreeMap::from([("app".into(), v.into())]));
        let sel = |l: &PodLabels| {
            policy_for("c1", &spec(Some(&by_label)), None, l, false)
                .map(|c| c.map(|c| c.file.len()))
        };
        assert_eq!(sel(&labels("web")).unwrap(), Some(1));
        assert_eq!(sel(&labels("db")).unwrap(), None);
        let err = sel(&PodLabels::Unknown("containerd: connection refused".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "policy shop/block-sa-token selects by pod labels, which could not be read: containerd: connection refused"
        );
        // A policy that selects every pod needs no labels.
        assert_eq!(
            policy_for(
                "c1",
                &spec(Some(TOKEN_POLICY)),
                None,
                &PodLabels::Unknown("down".into()),
                false
            )
            .unwrap()
            .map(|c| c.file.len()),
            Some(1)
        );
    }

    #[test]
    fn audit_mode_reports_what_block_rules_would_deny() {
        let enforced = policy_for("c1", &spec(Some(TOKEN_POLICY)), None, &no_labels(), false)
            .unwrap()
            .unwrap();
        assert_eq!(enforced.file[0].rule.meta.action, Action::Block);
        let audited = policy_for("c1", &spec(Some(TOKEN_POLICY)), None, &no_labels(), true)
            .unwrap()
            .unwrap();
        assert_eq!(audited.file[0].rule.meta.action, Action::Audit);
        assert_eq!(audited.deny_posture, DenyPosture::Audit);
    }

    #[test]
    fn bad_annotation_refuses_with_the_path_of_the_problem() {
        let bad = TOKEN_POLICY.replace(
            "dir: /var/run/secrets/kubernetes.io/serviceaccount/",
            "dir: relative/dir",
        );
        let err = policy_for("c1", &spec(Some(&bad)), None, &no_labels(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("pod annotation palisade.dev/policy: policy input rejected"),
            "{err}"
        );
        assert!(err.contains("spec.file.matchDirectories[0].dir"), "{err}");
    }

    #[test]
    fn directory_policies_apply_and_bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-token.yaml"), TOKEN_POLICY).unwrap();
        std::fs::write(dir.path().join("README.txt"), "not a policy").unwrap();
        let compiled = policy_for("c1", &spec(None), Some(dir.path()), &no_labels(), false)
            .unwrap()
            .expect("selected from the directory");
        assert_eq!(compiled.file.len(), 1);
        let other_ns = TOKEN_POLICY.replace("namespace: shop", "namespace: other");
        std::fs::write(dir.path().join("10-token.yaml"), other_ns).unwrap();
        assert!(
            policy_for("c1", &spec(None), Some(dir.path()), &no_labels(), false)
                .unwrap()
                .is_none(),
            "another namespace's policy does not apply"
        );
        std::fs::write(dir.path().join("20-broken.yaml"), "kind: [").unwrap();
        let err = policy_for("c1", &spec(None), Some(dir.path()), &no_labels(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "policy file {}: ",
                dir.path().join("20-broken.yaml").display()
            )),
            "{err}"
        );
        assert!(policy_for(
            "c1",
            &json!({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}}),
            Some(dir.path()),
            &no_labels(),
            false
        )
        .unwrap()
        .is_none());
    }
}
