//! Process rules: exec allow-lists as landlock execute grants, blocks for the monitor.

use super::*;

#[test]
fn process_allow_list_grants_execute_to_the_listed_binaries_and_the_loader() -> Result<()> {
    let (_, e) = enforced(policy_file!("process-allow"))?;
    let ll = landlock(&e);
    let handled = handled(ll);
    assert!(handled.contains(&FsAccess::Execute));
    for bin in ["/bin/bash", "/bin/ping", "/bin/sh", "/usr/sbin/apache2"] {
        assert_eq!(grant(&e, bin), [FsAccess::Execute].into(), "{bin}");
    }
    assert!(grant(&e, "/lib64/ld-linux-x86-64.so.2").contains(&FsAccess::Execute));
    assert!(
        ll.fs.iter().all(|r| r.optional),
        "a missing binary grants nothing"
    );
    // The file Allow on / restricts nothing: reads and writes stay unhandled, so the ruleset
    // needs only abi 1 (handling writes would need abi 3 for truncate: Debian 12's 6.1 has 2).
    for right in [FsAccess::ReadFile, FsAccess::WriteFile, FsAccess::Truncate] {
        assert!(!handled.contains(&right), "{right:?} handled");
    }
    assert_eq!(ll.required_abi, 1);

    assert_enforcers(
        &e,
        &[
            ("spec.process.matchPaths[0]", Enforcer::Landlock),
            ("spec.process.matchPaths[1]", Enforcer::MonitorExecKill),
        ],
    );
    let allow_exec: Vec<&str> = e
        .monitor
        .allow_exec
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(
        allow_exec,
        [
            "demo/allow-specific-process: spec.process.matchPaths[1]",
            "demo/allow-specific-process: spec.process.matchPaths[2]"
        ]
    );
    assert_eq!(e.monitor.allow_exec[0].from_source, ["/bin/dash"]);
    assert!(
        !e.monitor.exec_allow_list,
        "landlock carries the list itself"
    );
    Ok(())
}

#[test]
fn allow_lists_in_audit_posture_restrict_nothing_and_go_to_the_monitor() -> Result<()> {
    let options = CompileOptions {
        deny_posture: palisade_policy::DenyPosture::Audit,
    };
    let p = policy_with(policy_file!("process-allow"), &options)?;
    let e = enforce(ID, &mut spec()?, Some(&p), None, &node())?;
    assert!(
        e.plan.is_none(),
        "an allow-list being tried out restricts nothing"
    );
    assert!(e.monitor.exec_allow_list);
    assert_eq!(e.monitor.exec_posture, Some(palisade_policy::Action::Audit));
    assert_eq!(e.monitor.allow_exec.len(), 4);
    assert_eq!(e.monitor.audit.len(), 1, "the file allow-list");
    assert!(
        e.rules.iter().all(|r| r.enforcer == Enforcer::MonitorAudit),
        "{:#?}",
        e.rules
    );
    Ok(())
}

#[test]
fn process_block_without_allow_list_goes_to_the_monitor() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let e = enforce_policy(&mut s, policy_file!("block-apt"))?;
    assert_eq!(s, before, "nothing in the spec can block an exec by path");
    assert!(e.plan.is_none());
    let deny: Vec<String> = e
        .monitor
        .deny_exec
        .iter()
        .map(|r| format!("{:?} {:?} {}", r.target, r.action, r.severity))
        .collect();
    assert_eq!(
        deny,
        [
            "Path(\"/usr/bin/apt\") Block 3",
            "Path(\"/usr/bin/apt-get\") Block 3"
        ]
    );
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorExecKill));
    Ok(())
}

#[test]
fn process_block_outside_an_allow_list_is_already_landlock_s() -> Result<()> {
    let yaml = [policy_file!("process-allow"), policy_file!("block-apt")].join("\n---\n");
    let e = enforce(ID, &mut spec()?, Some(&policy(&yaml)?), None, &node())?;
    assert_eq!(rule_on(&e, "/usr/bin/apt").enforcer, Enforcer::Landlock);
    assert!(e.monitor.deny_exec.is_empty());
    Ok(())
}

#[test]
fn process_allow_list_by_name_is_refused_or_handed_to_the_monitor() -> Result<()> {
    let p = policy(policy_file!("execname-allow"))?;
    let err = enforce(ID, &mut spec()?, Some(&p), None, &node()).unwrap_err();
    assert!(
        err.to_string()
            .contains("policy demo/allow-by-name: spec.process.matchPaths[0]: process rule nginx: landlock's execute right takes paths"),
        "{err}"
    );
    let e = enforce(ID, &mut spec()?, Some(&p), Some(&degraded()), &node())?;
    assert!(e.monitor.exec_allow_list);
    assert_eq!(e.monitor.exec_posture, Some(palisade_policy::Action::Block));
    assert_eq!(e.monitor.allow_exec.len(), 2);
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorExecKill));
    assert_eq!(e.rules.len(), 2);
    let ll = landlock(&e);
    assert!(!handled(ll).contains(&FsAccess::Execute));
    Ok(())
}

/// Both allow-lists, as a learned profile has them: the kernel opens a binary for reading to
/// execute it, so the listed binaries and the loaders are readable even though the file list
/// does not name them (without it no binary of the list could start).
#[test]
fn process_and_file_allow_lists_make_the_listed_binaries_readable() -> Result<()> {
    let yaml = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: learned
  namespace: demo
spec:
  action: Allow
  file:
    matchPaths:
    - path: /etc/hostname
      readOnly: true
  process:
    matchPaths:
    - path: /bin/sh
  selector:
    matchLabels:
      app: web
";
    let (_, e) = enforced(yaml)?;
    let handled = handled(landlock(&e));
    assert!(handled.contains(&FsAccess::ReadFile) && handled.contains(&FsAccess::Execute));
    assert_eq!(
        grant(&e, "/bin/sh"),
        [FsAccess::Execute, FsAccess::ReadFile].into()
    );
    assert!(grant(&e, "/lib64/ld-linux-x86-64.so.2").contains(&FsAccess::ReadFile));
    assert!(
        !grant(&e, "/etc/hostname").contains(&FsAccess::Execute),
        "a readable file is not made executable"
    );
    Ok(())
}
