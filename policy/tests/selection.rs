//! Which policies a container gets, and what the merged result means.

use std::collections::BTreeMap;

use palisade_policy::{
    compile, compile_for, parse_pod_annotation, parse_policies, select, Action, CompileOptions,
    CompiledPolicy, DenyPosture, Enforcer, Exec, FileAccess, Limits, Policy, Protocol, Scope,
    Workload,
};

fn policies(yaml: &str) -> Vec<Policy> {
    match parse_policies(yaml.as_bytes()) {
        Ok(p) => p.policies,
        Err(d) => panic!("{d}"),
    }
}

/// A Block policy on `/data/<name>` with the given selector lines (indented by four spaces).
fn policy(name: &str, namespace: &str, selector: &str) -> String {
    format!(
        "---\napiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  selector:\n{selector}  file:\n    matchPaths:\n    - path: /data/{name}\n"
    )
}

fn workload(namespace: &str, container: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.into(),
        pod_name: "web-7d9f".into(),
        container_name: container.into(),
        image: "registry.example/web:2".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn names(selected: &[&Policy]) -> Vec<String> {
    selected.iter().map(|p| p.id.name.clone()).collect()
}

#[test]
fn selection_by_namespace_labels_expressions_and_container() {
    let all = policies(
        &[
            policy("by-app", "shop", "    matchLabels:\n      app: web\n"),
            policy("other-ns", "bank", "    matchLabels:\n      app: web\n"),
            policy("by-two", "shop", "    matchLabels:\n      app: web\n      tier: backend\n"),
            policy(
                "expr-in",
                "shop",
                "    matchExpressions:\n    - key: label\n      operator: In\n      values: [app=web, app=api]\n",
            ),
            policy(
                "expr-notin",
                "shop",
                "    matchExpressions:\n    - key: label\n      operator: NotIn\n      values: [env=dev]\n",
            ),
            policy(
                "k8s-expr",
                "shop",
                "    matchExpressions:\n    - key: tier\n      operator: In\n      values: [frontend]\n",
            ),
            policy(
                "container",
                "shop",
                "    matchLabels:\n      kubearmor.io/container.name: \"[nginx, envoy]\"\n",
            ),
            policy("everything", "shop", "    matchLabels: {}\n"),
        ]
        .concat(),
    );
    let w = workload("shop", "nginx", &[("app", "web"), ("tier", "frontend")]);
    assert_eq!(
        names(&select(&all, &w)),
        [
            "by-app",
            "expr-in",
            "expr-notin",
            "k8s-expr",
            "container",
            "everything"
        ]
    );
    let dev = workload("shop", "sidecar", &[("app", "api"), ("env", "dev")]);
    assert_eq!(names(&select(&all, &dev)), ["expr-in", "everything"]);
    let bank = workload("bank", "nginx", &[("app", "web")]);
    assert_eq!(names(&select(&all, &bank)), ["other-ns"]);
}

#[test]
fn inactive_policies_are_not_selected() {
    let yaml = policy("off", "shop", "    matchLabels:\n      app: web\n")
        .replace("  file:", "  status: Inactive\n  file:");
    let all = policies(&yaml);
    assert!(!all[0].active);
    assert!(select(&all, &workload("shop", "c", &[("app", "web")])).is_empty());
}

#[test]
fn pod_annotation_policies_apply_to_their_pod_only() {
    let inline = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: inline\nspec:\n  selector:\n    matchLabels:\n      kubearmor.io/container.name: nginx\n  process:\n    matchPaths:\n    - path: /usr/bin/curl\n";
    let parsed = parse_pod_annotation("shop", "web-7d9f", inline, &Limits::default())
        .expect("inline policy");
    let p = &parsed.policies[0];
    assert_eq!(p.id.namespace, "shop");
    assert_eq!(
        p.scope,
        Scope::Pod {
            pod_name: "web-7d9f".into()
        }
    );
    let mine = workload("shop", "nginx", &[]);
    assert_eq!(select(&parsed.policies, &mine).len(), 1);
    let sidecar = workload("shop", "envoy", &[]);
    assert!(select(&parsed.policies, &sidecar).is_empty());
    let other_pod = Workload {
        pod_name: "web-other".into(),
        ..mine.clone()
    };
    assert!(select(&parsed.policies, &other_pod).is_empty());

    let elsewhere = inline.replace("  name: inline\n", "  name: inline\n  namespace: bank\n");
    let d = parse_pod_annotation("shop", "web-7d9f", &elsewhere, &Limits::default())
        .expect_err("namespace mismatch");
    let e = d.find("metadata.namespace").expect("namespace error");
    assert_eq!(e.message, "must be the pod's namespace shop, not bank");
}

const MERGE: &str = "
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: b-open-files
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  file:
    matchDirectories:
    - dir: /
      recursive: true
  action: Allow
---
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: a-secrets
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  severity: 9
  tags: [secrets]
  file:
    matchPaths:
    - path: /etc/shadow
    - path: /etc/app.conf
      action: Audit
    matchPatterns:
    - pattern: /home/*/.ssh/**
  process:
    matchPaths:
    - path: /usr/bin/nc
    - path: /usr/bin/wget
      action: Audit
---
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: c-syscalls
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  syscalls:
    matchSyscalls:
    - syscall: [ptrace]
      action: Block
    - syscall: [unlink]
    matchPaths:
    - path: /etc/
      recursive: true
      syscall: [unlinkat]
      action: Block
  capabilities:
    matchCapabilities:
    - capability: sys_admin
      fromSource:
      - path: /bin/mount
      action: Block
";

fn merged(options: &CompileOptions) -> CompiledPolicy {
    let all = policies(MERGE);
    compile_for(&all, &workload("shop", "app", &[("app", "web")]), options)
}

fn file(path: &str) -> FileAccess<'_> {
    FileAccess {
        path,
        write: false,
        by_owner: true,
        source: Some("/bin/sh"),
    }
}

#[test]
fn merge_keeps_provenance_and_sorts_policies() {
    let c = merged(&CompileOptions::default());
    let ids: Vec<String> = c.policies.iter().map(ToString::to_string).collect();
    assert_eq!(
        ids,
        ["shop/a-secrets", "shop/b-open-files", "shop/c-syscalls"]
    );
    assert_eq!(c.file.len(), 4);
    assert_eq!(c.file[0].policy.name, "a-secrets");
    assert_eq!(c.file[0].rule.meta.severity, 9);
    assert_eq!(c.file[0].rule.meta.tags, ["secrets"]);
    assert_eq!(c.file[3].policy.name, "b-open-files");
    assert_eq!(c.process.len(), 2);
    assert_eq!(c.syscalls.len(), 3);
    assert_eq!(c.capabilities.len(), 1);
    assert_eq!(c.rule_count(), 10);
    assert_eq!(c.workload.image, "registry.example/web:2");
}

#[test]
fn posture_follows_allow_rules_per_kind() {
    let c = merged(&CompileOptions::default());
    // An Allow rule exists for files only.
    assert_eq!(c.posture.file, Action::Block);
    assert_eq!(c.posture.process, Action::Allow);
    assert_eq!(c.posture.network, Action::Allow);
    assert_eq!(c.posture.capabilities, Action::Allow);
    assert_eq!(c.posture.syscalls, Action::Allow);
    let audit = merged(&CompileOptions {
        deny_posture: DenyPosture::Audit,
    });
    assert_eq!(audit.posture.file, Action::Audit);
    assert_eq!(audit.posture.process, Action::Allow);
}

#[test]
fn block_beats_allow_and_audit_is_reported() {
    let c = merged(&CompileOptions::default());
    // Block in one policy wins over Allow in another.
    let shadow = c.decide_file(&file("/etc/shadow"));
    assert_eq!(shadow.action, Action::Block);
    assert_eq!(shadow.rules.len(), 1);
    assert_eq!(shadow.rules[0].origin, "spec.file.matchPaths[0]");
    assert_eq!(shadow.rules[0].policy.name, "a-secrets");
    // Allow plus Audit: permitted and reported.
    assert_eq!(c.decide_file(&file("/etc/app.conf")).action, Action::Audit);
    // Only the Allow matches.
    let hosts = c.decide_file(&file("/etc/hosts"));
    assert_eq!(hosts.action, Action::Allow);
    assert_eq!(hosts.rules[0].policy.name, "b-open-files");
    // Globs.
    for (path, action) in [
        ("/home/ann/.ssh/id_ed25519", Action::Block),
        ("/home/ann/notes", Action::Allow),
    ] {
        assert_eq!(c.decide_file(&file(path)).action, action, "{path}");
    }

    let exec = |path| Exec {
        path,
        by_owner: true,
        source: None,
    };
    assert_eq!(c.decide_exec(&exec("/usr/bin/nc")).action, Action::Block);
    assert_eq!(c.decide_exec(&exec("/usr/bin/wget")).action, Action::Audit);
    assert_eq!(c.decide_exec(&exec("/usr/bin/env")).action, Action::Allow);
    assert_eq!(c.decide_socket(Protocol::Tcp, None).action, Action::Allow);
}

#[test]
fn allow_list_audit_posture_permits_but_reports() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: only-nginx\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: web\n  process:\n    matchPaths:\n    - path: /usr/sbin/nginx\n  action: Allow\n";
    let all = policies(yaml);
    let w = workload("shop", "app", &[("app", "web")]);
    let exec = Exec {
        path: "/bin/sh",
        by_owner: true,
        source: None,
    };
    let block = compile_for(&all, &w, &CompileOptions::default());
    assert_eq!(block.decide_exec(&exec).action, Action::Block);
    let audit = compile_for(
        &all,
        &w,
        &CompileOptions {
            deny_posture: DenyPosture::Audit,
        },
    );
    assert_eq!(audit.decide_exec(&exec).action, Action::Audit);
    let nginx = Exec {
        path: "/usr/sbin/nginx",
        ..exec
    };
    assert_eq!(audit.decide_exec(&nginx).action, Action::Allow);
}

#[test]
fn syscalls_and_capabilities_decide_with_paths_and_sources() {
    let c = merged(&CompileOptions::default());
    assert_eq!(c.decide_syscall("ptrace", None, None).action, Action::Block);
    assert_eq!(c.decide_syscall("unlink", None, None).action, Action::Audit);
    assert_eq!(
        c.decide_syscall("unlinkat", Some("/etc/passwd"), None)
            .action,
        Action::Block
    );
    assert_eq!(
        c.decide_syscall("unlinkat", Some("/tmp/x"), None).action,
        Action::Allow
    );
    let sys_admin = palisade_policy::Capability::parse("sys_admin").expect("cap");
    assert_eq!(
        c.decide_capability(sys_admin, Some("/bin/mount")).action,
        Action::Block
    );
    assert_eq!(
        c.decide_capability(sys_admin, Some("/bin/sh")).action,
        Action::Allow
    );
}

#[test]
fn unenforceable_parts_are_stated_per_rule() {
    let c = merged(&CompileOptions::default());
    let pattern = &c.file[2];
    assert_eq!(pattern.rule.meta.origin, "spec.file.matchPatterns[0]");
    // A glob Block is the monitor's BPF-LSM programs' alone, matched by the kernel where its
    // form allows.
    assert_eq!(
        pattern.enforcement.enforcers().collect::<Vec<_>>(),
        [Enforcer::BpfLsm]
    );
    assert!(pattern.enforcement.is_fully_enforceable());
    let caveat = pattern.enforcement.candidates[0].caveat.as_deref();
    assert!(
        caveat.is_some_and(|c| c.contains("where BPF-LSM is in force")
            && c.contains("files created later included")),
        "{caveat:?}"
    );

    let by_origin = |origin: &str| {
        c.syscalls
            .iter()
            .find(|r| r.rule.meta.origin == origin)
            .expect("rule")
    };
    let ptrace = by_origin("spec.syscalls.matchSyscalls[0]");
    assert!(ptrace.enforcement.is_fully_enforceable());
    assert_eq!(
        ptrace.enforcement.enforcers().collect::<Vec<_>>(),
        [Enforcer::Seccomp]
    );
    let on_path = by_origin("spec.syscalls.matchPaths[0]");
    assert!(on_path.enforcement.unenforceable[0].starts_with("matchPaths: seccomp"));
    let audit = by_origin("spec.syscalls.matchSyscalls[1]");
    assert_eq!(
        audit.enforcement.enforcers().collect::<Vec<_>>(),
        [Enforcer::AuditOnly]
    );
    assert!(audit.enforcement.is_fully_enforceable());

    let cap = &c.capabilities[0];
    assert!(cap.enforcement.unenforceable[0].contains("capability bounding set"));

    let notes = c.unenforceable();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("spec.syscalls.matchPaths[0]: matchPaths: seccomp")),
        "{notes:#?}"
    );
}

#[test]
fn non_recursive_directories_warn_that_enforcers_cover_the_subtree() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: flat\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: web\n  file:\n    matchDirectories:\n    - dir: /etc/\n";
    let all = policies(yaml);
    let c = compile_for(
        &all,
        &workload("shop", "c", &[("app", "web")]),
        &CompileOptions::default(),
    );
    let e = &c.file[0].enforcement;
    assert!(e.is_fully_enforceable());
    // BPF-LSM keys the directory itself and covers only its files; the others the subtree.
    for c in &e.candidates {
        let want = if c.enforcer == Enforcer::BpfLsm {
            "where BPF-LSM is in force; elsewhere the path is masked"
        } else {
            "covers the whole subtree, stricter than the non-recursive rule"
        };
        assert_eq!(c.caveat.as_deref(), Some(want), "{c:?}");
    }
    assert_eq!(c.decide_file(&file("/etc/passwd")).action, Action::Block);
    assert_eq!(
        c.decide_file(&file("/etc/ssl/cert.pem")).action,
        Action::Allow
    );
}

#[test]
fn compiled_form_round_trips_through_json() {
    let c = merged(&CompileOptions::default());
    let json = serde_json::to_string(&c).expect("serialize");
    assert!(json.contains("\"enforcer\":\"audit_only\""));
    assert!(json.contains("\"capability\":\"sys_admin\""));
    let back: CompiledPolicy = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, c);
}

#[test]
fn compile_of_nothing_is_permissive() {
    let c = compile(&[], &workload("shop", "c", &[]), &CompileOptions::default());
    assert_eq!(c.rule_count(), 0);
    assert_eq!(c.posture.file, Action::Allow);
    assert_eq!(c.decide_file(&file("/etc/shadow")).action, Action::Allow);
    assert!(c.unenforceable().is_empty());
}

#[test]
fn inline_policy_without_selector_covers_its_pod_quietly() {
    let inline = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: whole-pod\nspec:\n  capabilities:\n    matchCapabilities:\n    - capability: net_raw\n";
    let parsed = parse_pod_annotation("shop", "web-7d9f", inline, &Limits::default())
        .expect("inline policy");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    for container in ["nginx", "envoy"] {
        assert_eq!(
            select(&parsed.policies, &workload("shop", container, &[])).len(),
            1
        );
    }
}

#[test]
fn container_name_expressions_select_like_kubearmor() {
    let all = policies(
        &[
            policy(
                "all-containers",
                "shop",
                "    matchLabels:\n      kubearmor.io/container.name: \".*\"\n",
            ),
            policy(
                "web-only",
                "shop",
                "    matchLabels:\n      kubearmor.io/container.name: \"^web-[0-9]+$\"\n",
            ),
            policy(
                "not-sidecars",
                "shop",
                "    matchExpressions:\n    - key: label\n      operator: NotIn\n      values: [\"kubearmor.io/container.name=^istio-\"]\n",
            ),
        ]
        .concat(),
    );
    assert_eq!(
        names(&select(&all, &workload("shop", "web-12", &[]))),
        ["all-containers", "web-only", "not-sidecars"]
    );
    assert_eq!(
        names(&select(&all, &workload("shop", "istio-proxy", &[]))),
        ["all-containers"]
    );

    let bad = policy(
        "bad",
        "shop",
        "    matchLabels:\n      kubearmor.io/container.name: \"^web-[\"\n",
    );
    let d = parse_policies(bad.as_bytes()).expect_err("invalid regex");
    let e = d
        .find("spec.selector.matchLabels.kubearmor.io/container.name")
        .expect("selector error");
    assert_eq!(
        e.message,
        "invalid regular expression: unclosed character class"
    );
}
