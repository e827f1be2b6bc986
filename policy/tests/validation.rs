//! Every field and every validation problem: the path and the message users see.

use palisade_policy::{
    parse_policies, Action, Diagnostics, FileTarget, Level, Parsed, PathMatch, ProcessTarget,
    Protocol, Source,
};

/// A policy with a selector and the given `spec` body (indented by two spaces).
fn doc(spec_body: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  selector:\n    matchLabels:\n      app: web\n{spec_body}"
    )
}

fn parse_ok(yaml: &str) -> Parsed {
    match parse_policies(yaml.as_bytes()) {
        Ok(p) => p,
        Err(d) => panic!("expected the policy to load:\n{yaml}\n{d}"),
    }
}

fn parse_err(yaml: &str) -> Diagnostics {
    match parse_policies(yaml.as_bytes()) {
        Ok(p) => panic!("expected errors for:\n{yaml}\ngot {p:?}"),
        Err(d) => d,
    }
}

/// The (path, message) of every error, in order.
fn errors(yaml: &str) -> Vec<(String, String)> {
    parse_err(yaml)
        .errors()
        .map(|d| (d.path.clone(), d.message.clone()))
        .collect()
}

/// Fails naming each (path below `at`, message) of `want` that `errs` lacks.
#[track_caller]
fn assert_has_below(errs: &[(String, String)], at: &str, want: &[(&str, &str)]) {
    for (path, message) in want {
        let path = format!("{at}{path}");
        assert!(
            errs.iter().any(|(p, m)| *p == path && m == message),
            "expected `{path}: {message}` in {errs:#?}"
        );
    }
}

#[track_caller]
fn assert_has(errs: &[(String, String)], want: &[(&str, &str)]) {
    assert_has_below(errs, "", want);
}

#[track_caller]
/// Whether `parsed` has a warning at `path` (saying `message`, when given).
fn warns(parsed: &Parsed, path: &str, message: Option<&str>) -> bool {
    parsed
        .warnings
        .iter()
        .any(|d| d.path == path && message.is_none_or(|m| d.message == m))
}

#[track_caller]
fn assert_error(yaml: &str, path: &str, message: &str) {
    assert_has(&errors(yaml), &[(path, message)]);
}

/// Asserts that `yaml` is refused with each `(path below at, message)` of `want`.
#[track_caller]
fn assert_errors(yaml: &str, at: &str, want: &[(&str, &str)]) {
    assert_has_below(&errors(yaml), at, want);
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = doc(
        "  severity: 11\n  file:\n    matchPaths:\n    - path: etc/passwd\n    matchDirectories:\n    - dir: /etc/\n    - dir: /var/log\n  process:\n    matchPaths:\n    - path: bin/sh\n  action: Deny\n",
    );
    let errs = errors(&yaml);
    assert_has(
        &errs,
        &[
            ("spec.severity", "must be between 1 and 10"),
            ("spec.file.matchPaths[0].path", "must be absolute"),
            ("spec.file.matchDirectories[1].dir", "must end with /"),
            ("spec.process.matchPaths[0].path", "must be absolute"),
            (
                "spec.action",
                "unknown action Deny, expected one of Allow, Audit, Block",
            ),
        ],
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
    // Display names the document and path, like the issue asks.
    let text = parse_err(&yaml).to_string();
    assert!(text.contains("error: document 0: spec.file.matchDirectories[1].dir: must end with /"));
}

#[test]
fn header_fields_are_checked() {
    let yaml = "apiVersion: v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: Bad_Name\n  namespace: Bad\nspec:\n  process:\n    matchPaths:\n    - path: /bin/sh\n";
    let errs = errors(yaml);
    assert_has(
        &errs,
        &[
            ("apiVersion", "must be security.kubearmor.com/v1, not v1"),
            (
                "kind",
                "unsupported kind KubeArmorHostPolicy, expected KubeArmorPolicy",
            ),
            (
                "metadata.name",
                "must be a DNS subdomain name (lowercase letters, digits, - and ., at most 253)",
            ),
            (
                "metadata.namespace",
                "must be a DNS label (lowercase letters, digits and -, at most 63)",
            ),
        ],
    );

    let missing = "spec:\n  process:\n    matchPaths:\n    - path: /bin/sh\n";
    let errs = errors(missing);
    assert_has(
        &errs,
        &[
            ("apiVersion", "is required"),
            ("kind", "is required"),
            ("metadata.name", "is required"),
        ],
    );

    assert_error(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n",
        "spec",
        "is required",
    );
}

#[test]
fn missing_namespace_defaults_like_kubectl() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  selector:\n    matchLabels:\n      app: x\n  process:\n    matchPaths:\n    - path: /bin/sh\n";
    assert_eq!(parse_ok(yaml).policies[0].id.namespace, "default");
}

#[test]
fn empty_rule_sets_are_errors() {
    assert_error(
        &doc("  action: Block\n"),
        "spec",
        "has no rules: set at least one of process, file, network, capabilities, syscalls",
    );
    assert_error(
        &doc("  file:\n    matchPaths: []\n"),
        "spec.file",
        "has no rules: set at least one of matchPaths, matchDirectories, matchPatterns",
    );
    assert_error(
        &doc("  process:\n    severity: 2\n"),
        "spec.process",
        "has no rules: set at least one of matchPaths, matchDirectories, matchPatterns",
    );
    assert_error(
        &doc("  network: {}\n"),
        "spec.network",
        "has no rules: set at least one of matchProtocols",
    );
    assert_error(
        &doc("  capabilities:\n    matchCapabilities: []\n"),
        "spec.capabilities",
        "has no rules: set at least one of matchCapabilities",
    );
    assert_error(
        &doc("  syscalls: {}\n"),
        "spec.syscalls",
        "has no rules: set at least one of matchSyscalls, matchPaths",
    );
}

#[test]
fn path_problems() {
    let cases = [
        ("relative", "must be absolute"),
        ("/a/../etc/shadow", "must not contain .. segments"),
        ("/etc/", "must not end with /"),
        ("", "must not be empty"),
    ];
    for (path, message) in cases {
        let yaml = doc(&format!(
            "  file:\n    matchPaths:\n    - path: \"{path}\"\n"
        ));
        assert_error(&yaml, "spec.file.matchPaths[0].path", message);
    }
    let nul = doc("  file:\n    matchPaths:\n    - path: \"/etc/pass\\0wd\"\n");
    assert_error(
        &nul,
        "spec.file.matchPaths[0].path",
        "must not contain NUL bytes",
    );
    let long = doc(&format!(
        "  file:\n    matchPaths:\n    - path: /{}\n",
        "a".repeat(5000)
    ));
    assert_error(
        &long,
        "spec.file.matchPaths[0].path",
        "is 5001 bytes long, limit is 4096",
    );
    let segment = doc(&format!(
        "  file:\n    matchPaths:\n    - path: /{}\n",
        "a".repeat(300)
    ));
    assert_error(
        &segment,
        "spec.file.matchPaths[0].path",
        "has a segment longer than 255 bytes",
    );
    let dir = doc("  process:\n    matchDirectories:\n    - dir: /usr/../bin/\n");
    assert_error(
        &dir,
        "spec.process.matchDirectories[0].dir",
        "must not contain .. segments",
    );
    // Unnormalized paths load, with a warning.
    let parsed = parse_ok(&doc(
        "  file:\n    matchPaths:\n    - path: /etc//./passwd\n",
    ));
    let w = &parsed.warnings;
    assert!(w.iter().any(|d| d.path == "spec.file.matchPaths[0].path"
        && d.message == "is not normalized (empty or . segments)"
        && d.level == Level::Warning));
}

#[test]
fn pattern_problems() {
    for everything in ["/**", "*", "**", "/*/**"] {
        let yaml = doc(&format!(
            "  file:\n    matchPatterns:\n    - pattern: \"{everything}\"\n"
        ));
        assert_error(
            &yaml,
            "spec.file.matchPatterns[0].pattern",
            "matches every path; name what to match",
        );
    }
    assert_error(
        &doc("  process:\n    matchPatterns:\n    - pattern: \"bin/*sh\"\n"),
        "spec.process.matchPatterns[0].pattern",
        "must be absolute",
    );
    assert_error(
        &doc("  file:\n    matchPatterns:\n    - pattern: \"/var/../**\"\n"),
        "spec.file.matchPatterns[0].pattern",
        "must not contain .. segments",
    );
    let ok = parse_ok(&doc(
        "  file:\n    matchPatterns:\n    - pattern: /etc/**/*.key\n      readOnly: true\n",
    ));
    assert_eq!(
        ok.policies[0].file[0].target,
        FileTarget::Pattern("/etc/**/*.key".into())
    );
}

#[test]
fn from_source_problems() {
    let yaml = doc(
        "  process:\n    matchPaths:\n    - path: /bin/sleep\n      fromSource:\n      - path: bash\n      - dir: /usr/bin\n      - path: /bin/sh\n        dir: /bin/\n      - {}\n      - path: /bin/dash\n        recursive: true\n",
    );
    assert_errors(
        &yaml,
        "spec.process.matchPaths[0].fromSource",
        &[
            ("[0].path", "must be absolute"),
            ("[1].dir", "must end with /"),
            ("[2]", "set either path or dir, not both"),
            ("[3]", "must set path or dir"),
            ("[4].recursive", "applies only to dir"),
        ],
    );

    let ok = parse_ok(&doc(
        "  process:\n    matchPaths:\n    - path: /bin/sleep\n      fromSource:\n      - path: /bin/bash\n      - dir: /opt/tools/\n        recursive: true\n",
    ));
    assert_eq!(
        ok.policies[0].process[0].from_source,
        [
            Source::Path("/bin/bash".into()),
            Source::Directory {
                dir: "/opt/tools/".into(),
                recursive: true
            }
        ]
    );
}

#[test]
fn names_are_checked() {
    assert_error(
        &doc("  capabilities:\n    matchCapabilities:\n    - capability: net_rawr\n"),
        "spec.capabilities.matchCapabilities[0].capability",
        "unknown capability net_rawr",
    );
    assert_error(
        &doc("  network:\n    matchProtocols:\n    - protocol: sctp\n"),
        "spec.network.matchProtocols[0].protocol",
        "unknown protocol sctp, expected one of tcp, udp, icmp, raw",
    );
    assert_error(
        &doc("  syscalls:\n    matchSyscalls:\n    - syscall:\n      - openat\n      - opennat\n"),
        "spec.syscalls.matchSyscalls[0].syscall[1]",
        "unknown syscall opennat",
    );
    assert_error(
        &doc("  syscalls:\n    matchSyscalls:\n    - syscall: []\n"),
        "spec.syscalls.matchSyscalls[0].syscall",
        "must list at least one syscall",
    );
    assert_error(
        &doc("  network:\n    matchProtocols:\n    - fromSource:\n      - path: /bin/curl\n"),
        "spec.network.matchProtocols[0].protocol",
        "is required",
    );
}

#[test]
fn severity_bounds_at_every_level() {
    for (yaml_sev, ok) in [
        ("0", false),
        ("1", true),
        ("10", true),
        ("11", false),
        ("-3", false),
    ] {
        let yaml = doc(&format!(
            "  file:\n    severity: {yaml_sev}\n    matchPaths:\n    - path: /a\n      severity: {yaml_sev}\n"
        ));
        if ok {
            parse_ok(&yaml);
        } else {
            let errs = errors(&yaml);
            assert_has(
                &errs,
                &[
                    ("spec.file.severity", "must be between 1 and 10"),
                    (
                        "spec.file.matchPaths[0].severity",
                        "must be between 1 and 10",
                    ),
                ],
            );
        }
    }
}

#[test]
fn rule_level_overrides_section_and_spec() {
    let yaml = doc(
        "  severity: 2\n  tags: [spec]\n  message: from spec\n  action: Audit\n  file:\n    action: Block\n    severity: 4\n    matchPaths:\n    - path: /a\n    - path: /b\n      action: Allow\n      severity: 9\n      tags: [rule]\n      message: from rule\n  process:\n    matchPaths:\n    - path: /bin/x\n",
    );
    let p = &parse_ok(&yaml).policies[0];
    let a = &p.file[0].meta;
    assert_eq!((a.action, a.severity), (Action::Block, 4));
    assert_eq!(a.tags, ["spec"]);
    assert_eq!(a.message.as_deref(), Some("from spec"));
    let b = &p.file[1].meta;
    assert_eq!((b.action, b.severity), (Action::Allow, 9));
    assert_eq!(b.tags, ["rule"]);
    assert_eq!(b.message.as_deref(), Some("from rule"));
    let x = &p.process[0].meta;
    assert_eq!((x.action, x.severity), (Action::Audit, 2));
}

#[test]
fn defaults_block_and_severity_one_but_syscalls_audit() {
    let yaml = doc(
        "  file:\n    matchPaths:\n    - path: /a\n  syscalls:\n    matchSyscalls:\n    - syscall: [unlink]\n",
    );
    let p = &parse_ok(&yaml).policies[0];
    assert_eq!(p.file[0].meta.action, Action::Block);
    assert_eq!(p.file[0].meta.severity, 1);
    assert_eq!(p.syscalls[0].meta.action, Action::Audit);

    // An explicit Block on syscalls is honoured, with a warning about KubeArmor's audit-only rule.
    let blocked = parse_ok(&doc(
        "  syscalls:\n    matchSyscalls:\n    - syscall: [unlink]\n  action: Block\n",
    ));
    assert_eq!(blocked.policies[0].syscalls[0].meta.action, Action::Block);
    assert!(blocked.warnings.iter().any(|d| d.path == "spec.syscalls"));
}

#[test]
fn every_field_reaches_the_model() {
    let yaml = doc(
        "  process:\n    matchPaths:\n    - execname: curl\n      ownerOnly: true\n    matchDirectories:\n    - dir: /opt/bin/\n      recursive: true\n      ownerOnly: true\n      fromSource:\n      - path: /bin/bash\n    matchPatterns:\n    - pattern: /tmp/*\n      ownerOnly: false\n  file:\n    matchDirectories:\n    - dir: /data/\n      readOnly: true\n      ownerOnly: true\n  network:\n    matchProtocols:\n    - protocol: ICMP\n  capabilities:\n    matchCapabilities:\n    - capability: CAP_SYS_ADMIN\n      fromSource:\n      - dir: /usr/sbin/\n  syscalls:\n    matchPaths:\n    - path: /etc/\n      recursive: true\n      syscall: [unlinkat, unlink]\n      fromSource:\n      - dir: /bin/\n        recursive: true\n  apparmor: \"profile x {}\"\n  status: Inactive\n",
    );
    let parsed = parse_ok(&yaml);
    let p = &parsed.policies[0];
    assert!(!p.active);
    assert_eq!(p.process[0].target, ProcessTarget::ExecName("curl".into()));
    assert!(p.process[0].owner_only);
    assert_eq!(
        p.process[1].target,
        ProcessTarget::Directory {
            dir: "/opt/bin/".into(),
            recursive: true
        }
    );
    assert_eq!(p.process[2].target, ProcessTarget::Pattern("/tmp/*".into()));
    assert!(p.file[0].read_only && p.file[0].owner_only);
    assert_eq!(p.network[0].protocol, Protocol::Icmp);
    assert_eq!(p.capabilities[0].capability.name, "sys_admin");
    assert_eq!(p.capabilities[0].capability.number, 21);
    let s = &p.syscalls[0];
    assert_eq!(s.syscalls, ["unlink", "unlinkat"]);
    assert_eq!(
        s.target,
        Some(PathMatch::Directory {
            dir: "/etc/".into(),
            recursive: true
        })
    );
    assert_eq!(
        p.unenforced,
        ["spec.apparmor: raw AppArmor profile is not enforced"]
    );
    assert!(parsed.warnings.iter().any(|d| d.path == "spec.apparmor"));
}

#[test]
fn spec_status_values() {
    assert_error(
        &doc("  status: Paused\n  file:\n    matchPaths:\n    - path: /a\n"),
        "spec.status",
        "must be Active or Inactive, not Paused",
    );
}

#[test]
fn process_match_path_needs_exactly_one_target() {
    assert_error(
        &doc("  process:\n    matchPaths:\n    - path: /bin/sh\n      execname: sh\n"),
        "spec.process.matchPaths[0]",
        "set either path or execname, not both",
    );
    assert_error(
        &doc("  process:\n    matchPaths:\n    - ownerOnly: true\n"),
        "spec.process.matchPaths[0].path",
        "is required",
    );
    assert_error(
        &doc("  process:\n    matchPaths:\n    - execname: usr/bin/sh\n"),
        "spec.process.matchPaths[0].execname",
        "must be a process name (no / or NUL, at most 255 bytes)",
    );
}

#[test]
fn syscall_paths_recursive_only_on_directories() {
    assert_error(
        &doc("  syscalls:\n    matchPaths:\n    - path: /etc/passwd\n      recursive: true\n"),
        "spec.syscalls.matchPaths[0].recursive",
        "applies only to a directory path (ending with /)",
    );
}

#[test]
fn selector_problems() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  selector:\n    matchExpressions:\n    - key: label\n      operator: Exists\n      values: [app=web]\n    - key: label\n      operator: In\n      values: [appweb]\n    - operator: In\n      values: [x]\n    - key: tier\n      operator: NotIn\n  process:\n    matchPaths:\n    - path: /bin/sh\n";
    assert_errors(
        yaml,
        "spec.selector.matchExpressions",
        &[
            (
                "[0].operator",
                "unsupported operator Exists, expected In or NotIn",
            ),
            ("[1].values[0]", "must have the form key=value"),
            ("[2].key", "is required"),
            ("[3].values", "must list at least one value"),
        ],
    );
}

#[test]
fn duplicates_warn_and_conflicts_fail() {
    let dup = parse_ok(&doc(
        "  file:\n    matchPaths:\n    - path: /etc/shadow\n    - path: /etc/shadow\n",
    ));
    assert!(warns(
        &dup,
        "spec.file.matchPaths[1]",
        Some("duplicates spec.file.matchPaths[0]")
    ));

    assert_error(
        &doc("  file:\n    matchPaths:\n    - path: /etc/shadow\n      action: Allow\n    - path: /etc/shadow\n      action: Block\n"),
        "spec.file.matchPaths[1]",
        "conflicting actions on the same target: Block here, Allow at spec.file.matchPaths[0]",
    );
    assert_error(
        &doc("  network:\n    matchProtocols:\n    - protocol: tcp\n      action: Audit\n    - protocol: TCP\n      action: Block\n"),
        "spec.network.matchProtocols[1]",
        "conflicting actions on the same target: Block here, Audit at spec.network.matchProtocols[0]",
    );
    assert_error(
        &doc("  syscalls:\n    matchSyscalls:\n    - syscall: [unlink, rmdir]\n      action: Audit\n    - syscall: [rmdir]\n      action: Block\n"),
        "spec.syscalls.matchSyscalls[1]",
        "conflicting actions on the same target: Block here, Audit at spec.syscalls.matchSyscalls[0]",
    );
    // Different sources are different targets: no conflict.
    parse_ok(&doc(
        "  file:\n    matchDirectories:\n    - dir: /data/\n      action: Block\n    - dir: /data/\n      action: Allow\n      fromSource:\n      - path: /bin/db\n",
    ));
}

#[test]
fn duplicate_policy_names_in_one_input() {
    let one = doc("  file:\n    matchPaths:\n    - path: /a\n");
    let two = format!("{one}---\n{one}");
    assert_error(
        &two,
        "metadata.name",
        "policy ns/p is also defined in document 0",
    );
}

#[test]
fn root_directory_with_block_warns_but_allow_does_not() {
    let block = parse_ok(&doc(
        "  file:\n    matchDirectories:\n    - dir: /\n      recursive: true\n",
    ));
    assert!(warns(&block, "spec.file.matchDirectories[0].dir", None));
    let allow = parse_ok(&doc(
        "  file:\n    matchDirectories:\n    - dir: /\n      recursive: true\n  action: Allow\n",
    ));
    assert!(!warns(&allow, "spec.file.matchDirectories[0].dir", None));
}

#[test]
fn tags_and_messages_are_bounded() {
    assert_error(
        &doc("  tags: [\"\"]\n  file:\n    matchPaths:\n    - path: /a\n"),
        "spec.tags[0]",
        "must not be empty",
    );
    let long = doc(&format!(
        "  message: {}\n  file:\n    matchPaths:\n    - path: /a\n",
        "m".repeat(5000)
    ));
    assert_error(&long, "spec.message", "is 5000 bytes long, limit is 4096");
}

#[test]
fn unknown_fields_name_their_path_and_position() {
    let yaml = doc("  file:\n    matchPaths:\n    - path: /a\n      readonly: true\n");
    let d = parse_err(&yaml);
    let e = d.errors().next().expect("one error");
    assert_eq!(e.path, "spec.file.matchPaths[0].readonly");
    assert!(
        e.message
            .starts_with("unknown field, expected one of path, readOnly, ownerOnly"),
        "{}",
        e.message
    );
    assert!(!e.message.contains('`'));
    let loc = e.location.expect("location");
    assert_eq!(loc.line, 13);

    let top = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspek: {}\n";
    let d = parse_err(top);
    let e = d.errors().next().expect("one error");
    assert_eq!(e.path, "spek");
    assert_eq!(e.location.map(|l| l.line), Some(5));
}

#[test]
fn wrong_types_name_their_path() {
    let d = parse_err(&doc(
        "  severity: high\n  file:\n    matchPaths:\n    - path: /a\n",
    ));
    let e = d.errors().next().expect("one error");
    assert_eq!(e.path, "spec.severity");
    assert_eq!(
        e.message,
        "invalid type: string \"high\", expected an integer"
    );
    let d = parse_err(&doc("  file:\n  - path: /a\n"));
    let e = d.errors().next().expect("one error");
    assert_eq!(e.path, "spec.file");
    assert_eq!(e.message, "invalid type: sequence, expected a mapping");
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n spec: [\n";
    let d = parse_err(yaml);
    let e = d.errors().next().expect("one error");
    assert_eq!(e.path, ".");
    let loc = e.location.expect("location");
    assert!(loc.line >= 4, "{e}");
    assert!(loc.column >= 1);
}

#[test]
fn documents_are_numbered_in_diagnostics() {
    let good = doc("  file:\n    matchPaths:\n    - path: /a\n");
    let bad = doc("  file:\n    matchPaths:\n    - path: a\n").replace("name: p", "name: q");
    let d = parse_err(&format!("{good}---\n{bad}"));
    let e = d.errors().next().expect("one error");
    assert_eq!(e.document, 1);
    assert_eq!(e.path, "spec.file.matchPaths[0].path");
}

#[test]
fn validation_problems_point_at_their_line() {
    let yaml = doc(
        "  severity: 11\n  file:\n    matchDirectories:\n    - dir: /etc/\n    - dir: /var/log\n      recursive: true\n",
    );
    let d = parse_err(&yaml);
    let line = |path: &str| {
        d.find(path)
            .and_then(|e| e.location)
            .map(|l| (l.line, l.column))
    };
    assert_eq!(line("spec.severity"), Some((10, 3)));
    assert_eq!(line("spec.file.matchDirectories[1].dir"), Some((14, 7)));
    assert!(d
        .to_string()
        .contains("spec.file.matchDirectories[1].dir: must end with / (line 14, column 7)"));

    // In a later document, lines count from the start of the input.
    let good = doc("  file:\n    matchPaths:\n    - path: /a\n");
    let bad = doc("  file:\n    matchPaths:\n    - path: a\n").replace("name: p", "name: q");
    let d = parse_err(&format!("{good}---\n{bad}"));
    let e = d.errors().next().expect("one error");
    assert_eq!(e.document, 1);
    // 12 lines of the first document, the separator, then line 12 of the second.
    assert_eq!(e.location.map(|l| l.line), Some(12 + 1 + 12));
}

#[test]
fn an_input_without_policies_is_accepted_with_a_warning() {
    let parsed = parse_ok("# nothing yet\n---\n");
    assert!(parsed.policies.is_empty());
    assert_eq!(parsed.warnings[0].message, "input holds no policies");
}

#[test]
fn remaining_limits_and_warnings() {
    let many_tags = doc(&format!(
        "  tags: [{}]\n  file:\n    matchPaths:\n    - path: /a\n",
        vec!["t"; 65].join(", ")
    ));
    assert_error(&many_tags, "spec.tags", "has 65 tags, limit is 64");

    let long_tag = doc(&format!(
        "  file:\n    matchPaths:\n    - path: /a\n      tags: [{}]\n",
        "t".repeat(5000)
    ));
    assert_error(
        &long_tag,
        "spec.file.matchPaths[0].tags[0]",
        "is 5000 bytes long, limit is 4096",
    );

    let labels: String = (0..65).map(|i| format!("      l{i}: v\n")).collect();
    let many_labels = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  selector:\n    matchLabels:\n{labels}  file:\n    matchPaths:\n    - path: /a\n"
    );
    assert_error(
        &many_labels,
        "spec.selector.matchLabels",
        "has 65 labels, limit is 64",
    );

    let empty_key = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\nspec:\n  selector:\n    matchLabels:\n      \"\": v\n  file:\n    matchPaths:\n    - path: /a\n";
    assert_error(
        empty_key,
        "spec.selector.matchLabels",
        "label keys must not be empty",
    );

    let syscalls = doc(&format!(
        "  syscalls:\n    matchSyscalls:\n    - syscall: [{}]\n",
        vec!["read"; 1025].join(", ")
    ));
    assert_error(
        &syscalls,
        "spec.syscalls.matchSyscalls[0].syscall",
        "has 1025 syscalls, limit is 1024",
    );

    assert_error(
        &doc("  process:\n    matchPaths:\n    - execname: \"\"\n"),
        "spec.process.matchPaths[0].execname",
        "must not be empty",
    );

    let repeats = parse_ok(&doc(
        "  syscalls:\n    matchSyscalls:\n    - syscall: [read, read]\n      fromSource:\n      - path: /bin/a\n      - path: /bin/a\n",
    ));
    let warned = |path: &str, message: &str| warns(&repeats, path, Some(message));
    assert!(warned(
        "spec.syscalls.matchSyscalls[0].syscall[1]",
        "lists read twice"
    ));
    assert!(warned(
        "spec.syscalls.matchSyscalls[0].fromSource[1]",
        "duplicates spec.syscalls.matchSyscalls[0].fromSource[0]"
    ));
    assert_eq!(repeats.policies[0].syscalls[0].from_source.len(), 1);
}

#[test]
fn every_unknown_field_and_the_remaining_problems_are_reported() {
    let yaml = doc(
        "  sevrity: 3\n  file:\n    matchPaths:\n    - path: relative\n      readonly: true\n  process:\n    matchPaths:\n    - path: /bin/sh\n      action: Deny\n      fromsource:\n      - path: /bin/bash\n",
    );
    let d = parse_err(&yaml);
    let found: Vec<(String, String, Option<usize>)> = d
        .errors()
        .map(|e| {
            (
                e.path.clone(),
                e.message.clone(),
                e.location.map(|l| l.line),
            )
        })
        .collect();
    let line_of = |path: &str| {
        found
            .iter()
            .find(|(p, _, _)| p == path)
            .unwrap_or_else(|| panic!("no error at {path} in {found:#?}"))
            .2
    };
    assert_eq!(line_of("spec.sevrity"), Some(10));
    assert_eq!(line_of("spec.file.matchPaths[0].readonly"), Some(14));
    assert_eq!(line_of("spec.process.matchPaths[0].fromsource"), Some(19));
    // Validation still ran on what was left.
    assert_eq!(line_of("spec.file.matchPaths[0].path"), Some(13));
    assert_eq!(line_of("spec.process.matchPaths[0].action"), Some(18));
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn a_malformed_section_is_not_reported_twice() {
    // `file` is a list: one structure error, not also "spec has no rules".
    let d = parse_err(&doc("  file:\n  - path: /a\n"));
    let paths: Vec<&str> = d.errors().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.file"]);
    // A mistyped value next to a real problem: both are reported.
    let d = parse_err(&doc(
        "  severity: high\n  file:\n    matchPaths:\n    - path: /etc/\n",
    ));
    let paths: Vec<&str> = d.errors().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.severity", "spec.file.matchPaths[0].path"]);
}
