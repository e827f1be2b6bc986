//! KubeArmor's published use cases, written as users write them, parse, compile and decide as expected.

use std::path::PathBuf;

use anyhow::{Context, Result};
use palisade_policy::{
    compile_for, parse_policies, Action, Capability, CompileOptions, CompiledPolicy, Enforcement,
    Enforcer, Exec, FileAccess, FileTarget, Parsed, Policy, ProcessTarget, Protocol, Source,
    Workload,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Result<Vec<u8>> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).with_context(|| format!("reading fixture {}", path.display()))
}

fn parse_one(name: &str) -> Result<(Policy, Parsed)> {
    let parsed =
        parse_policies(&fixture(name)?).map_err(|d| anyhow::anyhow!("fixture {name}: {d}"))?;
    anyhow::ensure!(
        parsed.policies.len() == 1,
        "fixture {name}: expected one policy, got {}",
        parsed.policies.len()
    );
    Ok((parsed.policies[0].clone(), parsed))
}

fn workload(namespace: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.into(),
        pod_name: "pod-0".into(),
        container_name: "app".into(),
        image: "example/app:1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// `policy` selects no workload of `namespace` with `labels` (`why`).
fn assert_not_selected(policy: &Policy, namespace: &str, labels: &[(&str, &str)], why: &str) {
    let rules = compiled(policy, &workload(namespace, labels)).rule_count();
    assert_eq!(rules, 0, "{namespace} {labels:?}: {why}");
}

fn compiled(policy: &Policy, w: &Workload) -> CompiledPolicy {
    compile_for(std::slice::from_ref(policy), w, &CompileOptions::default())
}

fn read(path: &str) -> FileAccess<'_> {
    FileAccess {
        path,
        write: false,
        by_owner: false,
        source: Some("/bin/cat"),
    }
}

fn write(path: &str) -> FileAccess<'_> {
    FileAccess {
        write: true,
        ..read(path)
    }
}

/// Asserts the action `c` decides for each file access of `want`.
#[track_caller]
/// The mechanisms that carry a rule, in order.
fn enforcers(e: &Enforcement) -> Vec<Enforcer> {
    e.enforcers().collect()
}

fn assert_files<const N: usize>(c: &CompiledPolicy, want: [(FileAccess<'_>, Action); N]) {
    for (access, action) in want {
        assert_eq!(c.decide_file(&access).action, action, "{access:?}");
    }
}

#[test]
fn every_fixture_parses_without_errors() -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names.len(), 7, "fixtures: {names:?}");
    for name in &names {
        parse_one(name)?;
    }
    Ok(())
}

#[test]
fn all_fixtures_as_one_multi_document_file() -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut input = Vec::new();
    for path in &names {
        input.extend_from_slice(b"---\n");
        input.extend_from_slice(&std::fs::read(path)?);
    }
    // A trailing separator and a comment-only document are not policies.
    input.extend_from_slice(b"---\n# nothing here\n---\n");
    let parsed = parse_policies(&input).map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut got: Vec<String> = parsed.policies.iter().map(|p| p.id.to_string()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "dvwa/allow-specific-process",
            "dvwa/fim-for-system-paths",
            "dvwa/protect-trust-bundles",
            "shop/ksp-nginx-network-only",
            "wordpress-mysql/ksp-mysql-raw-tables",
            "wordpress-mysql/ksp-wordpress-block-process",
            "wordpress-mysql/ksp-wordpress-block-sa",
        ]
    );
    Ok(())
}

#[test]
fn service_account_token_is_blocked() -> Result<()> {
    let (p, _) = parse_one("block-service-account-token.yaml")?;
    assert_eq!(p.id.namespace, "wordpress-mysql");
    assert_eq!(p.id.name, "ksp-wordpress-block-sa");
    assert_eq!(
        p.selector.match_labels.get("app").map(String::as_str),
        Some("wordpress")
    );
    assert_eq!(p.file.len(), 1);
    let rule = &p.file[0];
    assert_eq!(
        rule.target,
        FileTarget::Directory {
            dir: "/run/secrets/kubernetes.io/serviceaccount/".into(),
            recursive: true
        }
    );
    // `action:` on its own line, then `Block`, is still spec-level Block.
    assert_eq!(rule.meta.action, Action::Block);
    assert_eq!(rule.meta.severity, 7);
    assert_eq!(rule.meta.origin, "spec.file.matchDirectories[0]");

    let w = workload("wordpress-mysql", &[("app", "wordpress")]);
    let c = compiled(&p, &w);
    assert_eq!(c.policies.len(), 1);
    assert_files(
        &c,
        [
            (
                read("/run/secrets/kubernetes.io/serviceaccount/token"),
                Action::Block,
            ),
            (read("/etc/hostname"), Action::Allow),
        ],
    );
    let e = &c.file[0].enforcement;
    assert!(e.is_fully_enforceable());
    assert_eq!(
        enforcers(e),
        [
            Enforcer::BpfLsm,
            Enforcer::Landlock,
            Enforcer::BindMountMask
        ]
    );
    assert_not_selected(&p, "wordpress-mysql", &[("app", "mysql")], "another app");
    Ok(())
}

#[test]
fn file_integrity_blocks_writes_not_reads() -> Result<()> {
    let (p, parsed) = parse_one("file-integrity-system-paths.yaml")?;
    assert_eq!(p.file.len(), 4);
    for r in &p.file {
        assert!(r.read_only);
        assert_eq!(r.meta.action, Action::Block);
        assert_eq!(r.meta.severity, 5);
        assert_eq!(r.meta.tags, ["NIST", "PCI-DSS"]);
        assert_eq!(
            r.meta.message.as_deref(),
            Some("Alert! An attempt to write to system directories denied.")
        );
    }
    // No selector: applies namespace-wide, which is worth a warning.
    assert!(parsed.warnings.iter().any(|d| d.path == "spec.selector"));
    let c = compiled(&p, &workload("dvwa", &[]));
    assert_eq!(c.decide_file(&write("/usr/bin/ls")).action, Action::Block);
    assert_eq!(c.decide_file(&write("/bin/x/y")).action, Action::Block);
    assert_eq!(c.decide_file(&read("/usr/bin/ls")).action, Action::Allow);
    assert_eq!(c.decide_file(&write("/tmp/scratch")).action, Action::Allow);
    let rules = c.decide_file(&write("/sbin/init")).rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].origin, "spec.file.matchDirectories[1]");
    assert_eq!(rules[0].policy.to_string(), "dvwa/fim-for-system-paths");
    Ok(())
}

#[test]
fn trust_bundles_are_read_only() -> Result<()> {
    let (p, _) = parse_one("protect-trust-bundles.yaml")?;
    assert_eq!(p.file.len(), 3);
    assert_eq!(
        p.file[2].meta.tags,
        ["MITRE", "MITRE_T1552_unsecured_credentials"]
    );
    assert_eq!(p.file[2].meta.severity, 1);
    let c = compiled(&p, &workload("dvwa", &[]));
    assert_files(
        &c,
        [
            (write("/etc/ssl/certs/evil.pem"), Action::Block),
            (read("/etc/ssl/certs/ca.pem"), Action::Allow),
        ],
    );
    let bind = c.file[0]
        .enforcement
        .candidates
        .iter()
        .find(|c| c.enforcer == Enforcer::BindMountMask)
        .context("bind mount candidate")?;
    assert!(bind.caveat.as_deref().unwrap_or("").contains("read-only"));
    Ok(())
}

#[test]
fn process_allow_list_denies_everything_else() -> Result<()> {
    let (p, _) = parse_one("process-allow-list.yaml")?;
    assert_eq!(p.process.len(), 4);
    assert_eq!(p.process[1].target, ProcessTarget::Path("/bin/ping".into()));
    assert_eq!(p.process[1].from_source, [Source::Path("/bin/dash".into())]);
    assert!(p.process.iter().all(|r| r.meta.action == Action::Allow));

    let w = workload("dvwa", &[("app", "dvwa-web"), ("tier", "frontend")]);
    let c = compiled(&p, &w);
    assert_eq!(c.posture.process, Action::Block);
    assert_eq!(c.posture.file, Action::Block);
    let exec = |path, source| Exec {
        path,
        by_owner: false,
        source,
    };
    assert_eq!(
        c.decide_exec(&exec("/usr/sbin/apache2", None)).action,
        Action::Allow
    );
    assert_eq!(
        c.decide_exec(&exec("/bin/sh", Some("/usr/sbin/apache2")))
            .action,
        Action::Allow
    );
    // Only dash may run ping; apache2 may run sh but not ping.
    assert_eq!(
        c.decide_exec(&exec("/bin/ping", Some("/bin/dash"))).action,
        Action::Allow
    );
    assert_eq!(
        c.decide_exec(&exec("/bin/ping", Some("/usr/sbin/apache2")))
            .action,
        Action::Block
    );
    let denied = c.decide_exec(&exec("/usr/bin/curl", Some("/bin/bash")));
    assert_eq!(denied.action, Action::Block);
    assert!(denied.rules.is_empty(), "the posture decided: {denied:?}");
    // The file allow-list covers every path, so files stay open.
    assert_eq!(c.decide_file(&write("/var/www/x")).action, Action::Allow);
    // fromSource process rules need the exec hook; plain paths can use landlock too.
    assert_eq!(
        enforcers(&c.process[1].enforcement),
        [Enforcer::EbpfExecKill]
    );
    assert_eq!(
        enforcers(&c.process[0].enforcement),
        [Enforcer::Landlock, Enforcer::EbpfExecKill]
    );
    assert_not_selected(&p, "dvwa", &[("app", "dvwa-web")], "needs both labels");
    Ok(())
}

#[test]
fn package_managers_are_blocked() -> Result<()> {
    let (p, _) = parse_one("block-package-managers.yaml")?;
    let c = compiled(&p, &workload("wordpress-mysql", &[("app", "wordpress")]));
    for (path, want) in [
        ("/usr/bin/apt", Action::Block),
        ("/usr/bin/apt-get", Action::Block),
        ("/usr/bin/aptitude", Action::Allow),
    ] {
        let exec = Exec {
            path,
            by_owner: true,
            source: Some("/bin/bash"),
        };
        assert_eq!(c.decide_exec(&exec).action, want, "{path}");
    }
    assert_eq!(c.posture.process, Action::Allow);
    assert_eq!(c.process[0].rule.meta.severity, 3);
    Ok(())
}

#[test]
fn raw_tables_only_for_mysql_binaries() -> Result<()> {
    let (p, _) = parse_one("mysql-raw-tables.yaml")?;
    let c = compiled(&p, &workload("wordpress-mysql", &[("app", "mysql")]));
    let access = |source| FileAccess {
        path: "/var/lib/mysql/wordpress/wp_users.ibd",
        write: false,
        by_owner: true,
        source: Some(source),
    };
    assert_files(
        &c,
        [
            (access("/usr/sbin/mysqld"), Action::Allow),
            (access("/usr/bin/mysqldump"), Action::Allow),
            (access("/bin/cat"), Action::Block),
            (read("/etc/mysql/my.cnf"), Action::Allow),
        ],
    );
    // The fromSource Allow cannot be done by landlock: stated, not hidden.
    let allow = &c.file[1];
    assert!(!allow.enforcement.is_fully_enforceable());
    assert_eq!(enforcers(&allow.enforcement), [Enforcer::AuditOnly]);
    assert!(c.unenforceable().iter().any(|n| n.starts_with(
        "wordpress-mysql/ksp-mysql-raw-tables: spec.file.matchDirectories[1]: fromSource"
    )));
    Ok(())
}

#[test]
fn network_only_for_nginx() -> Result<()> {
    let (p, _) = parse_one("network-specific-processes.yaml")?;
    assert_eq!(p.network.len(), 3);
    assert_eq!(p.network[0].protocol, Protocol::Tcp);
    assert_eq!(
        p.capabilities[0].capability,
        Capability::parse("net_raw").context("cap")?
    );
    let c = compiled(&p, &workload("shop", &[("app", "nginx")]));
    assert_eq!(c.posture.network, Action::Block);
    assert_eq!(
        c.decide_socket(Protocol::Tcp, Some("/usr/sbin/nginx"))
            .action,
        Action::Allow
    );
    assert_eq!(
        c.decide_socket(Protocol::Tcp, Some("/usr/bin/curl")).action,
        Action::Block
    );
    assert_eq!(
        c.decide_socket(Protocol::Raw, Some("/usr/sbin/nginx"))
            .action,
        Action::Block
    );
    assert_eq!(c.decide_socket(Protocol::Icmp, None).action, Action::Block);
    let net_raw = Capability::parse("net_raw").context("cap")?;
    assert_eq!(c.decide_capability(net_raw, None).action, Action::Block);
    assert_eq!(
        enforcers(&c.capabilities[0].enforcement),
        [Enforcer::CapabilityBoundingSet]
    );
    Ok(())
}
