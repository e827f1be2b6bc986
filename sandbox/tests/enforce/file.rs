//! File rules: masked and read-only paths, landlock grants, and what neither can express.

use super::*;

#[test]
fn file_block_masks_the_path_and_only_that_path() -> Result<()> {
    let mut s = spec()?;
    let p = policy(policy_file!("block-token"))?;
    let e = enforce(ID, &mut s, Some(&p), None, &node())?;
    let masked = strings(&s["linux"]["maskedPaths"]);
    assert!(masked.contains(&"/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned()));
    assert!(!masked
        .iter()
        .any(|m| m.ends_with("ca.crt") || m.ends_with("serviceaccount")));
    assert!(
        masked.contains(&"/proc/kcore".to_owned()),
        "harden_spec's masks stay"
    );
    assert_eq!(
        enforcer_of(&e, "spec.file.matchPaths[0]"),
        Enforcer::BindMountMask
    );
    assert!(e.plan.is_none(), "masks need no palisade-init");
    assert_eq!(
        e.rules[0].rule,
        "demo/block-sa-token: spec.file.matchPaths[0]"
    );

    let (s, e) = enforced(policy_file!("block-sa-dir"))?;
    assert!(strings(&s["linux"]["maskedPaths"])
        .contains(&"/run/secrets/kubernetes.io/serviceaccount".to_owned()));
    assert_eq!(e.rules[0].enforcer.to_string(), "bind-mount-mask");
    Ok(())
}

#[test]
fn file_integrity_read_only_block_becomes_readonly_paths() -> Result<()> {
    let (s, e) = enforced(policy_file!("fim"))?;
    let ro = strings(&s["linux"]["readonlyPaths"]);
    for dir in ["/bin", "/sbin", "/usr/sbin", "/usr/bin"] {
        assert!(ro.contains(&dir.to_owned()), "{dir} in {ro:?}");
    }
    assert!(ro.contains(&"/proc/sys".to_owned()));
    assert!(!strings(&s["linux"]["maskedPaths"]).contains(&"/bin".to_owned()));
    assert_eq!(e.rules.len(), 4);
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::ReadonlyPath));
    assert!(e.rules[0].note.as_deref().unwrap_or("").contains("EROFS"));
    Ok(())
}

/// Where BPF-LSM is in force a read-only rule goes to its `file_open` program and keeps the
/// read-only remount: file_open does not see an unlink, a rename or a mkdir (the 6.1 guest
/// deleted /bin/ls under a BPF-LSM-only read-only rule before this).
#[test]
fn read_only_block_under_bpf_lsm_keeps_the_read_only_remount() -> Result<()> {
    let mut s = spec()?;
    let lsm = KernelFeatures {
        bpf_lsm: true,
        ..node()
    };
    let e = enforce(ID, &mut s, Some(&policy(policy_file!("fim"))?), None, &lsm)?;
    let ro = strings(&s["linux"]["readonlyPaths"]);
    for dir in ["/bin", "/sbin", "/usr/sbin", "/usr/bin"] {
        assert!(ro.contains(&dir.to_owned()), "{dir} in {ro:?}");
    }
    assert_eq!(e.monitor.deny_file.len(), 4);
    assert!(e.monitor.deny_file.iter().all(|r| r.read_only));
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorBpfLsm));
    assert!(e.rules[0].note.as_deref().unwrap_or("").contains("unlink"));
    Ok(())
}

#[test]
fn file_rules_landlock_and_mounts_cannot_express_are_refused_or_degraded_to_audit() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let p = policy(policy_file!("pattern-block"))?;
    let err = enforce(ID, &mut s, Some(&p), None, &node()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "container abc123: policy demo/block-keys: spec.file.matchPaths[0]: file rule \
             /etc/shadow: ownerOnly"
        ) || msg.contains("policy demo/block-keys: spec.file.matchPatterns[0]: file rule /etc/**/*.key: matchPatterns"),
        "{msg}"
    );
    assert!(
        msg.contains("/etc/**/*.key: matchPatterns: landlock and mounts cannot express globs"),
        "{msg}"
    );
    assert!(msg.contains("/etc/shadow: ownerOnly"), "{msg}");
    assert!(msg.ends_with("refused (allow_degraded is off)"), "{msg}");
    assert_eq!(s, before);

    let e = enforce(ID, &mut s, Some(&p), Some(&degraded()), &node())?;
    assert_eq!(e.rules.len(), 2);
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::AuditOnly));
    assert_eq!(e.monitor.audit.len(), 2);
    assert_eq!(e.warnings.len(), 2);
    assert!(!strings(&s["linux"]["maskedPaths"]).contains(&"/etc/shadow".to_owned()));
    Ok(())
}

#[test]
fn file_allow_list_becomes_landlock_read_and_write_grants() -> Result<()> {
    let (_, e) = enforced(policy_file!("file-allow"))?;
    let ll = landlock(&e);
    let handled = handled(ll);
    assert!(handled.contains(&FsAccess::ReadFile) && handled.contains(&FsAccess::WriteFile));
    assert!(
        !handled.contains(&FsAccess::Execute),
        "no process allow-list"
    );
    let usr = grant(&e, "/usr");
    assert!(usr.contains(&FsAccess::ReadFile) && !usr.contains(&FsAccess::WriteFile));
    let cache = grant(&e, "/var/cache/nginx");
    assert!(cache.contains(&FsAccess::ReadDir) && cache.contains(&FsAccess::MakeReg));
    assert_eq!(
        grant(&e, "/etc/nginx/nginx.conf"),
        [FsAccess::ReadFile, FsAccess::ReadDir].into()
    );
    assert!(grant(&e, "/etc").is_empty(), "nothing else is granted");
    assert_eq!(ll.required_abi, 3);
    assert!(!ll.scope.signal, "no strict mode, no scoping");
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::Landlock));

    // With strict mode, writes need both the allow-list and a writable mount.
    let mut s = spec()?;
    let cfg = StrictConfig {
        writable_paths: vec!["/var/cache".into()],
        ..StrictConfig::default()
    };
    let e = enforce(
        ID,
        &mut s,
        Some(&policy(policy_file!("file-allow"))?),
        Some(&cfg),
        &node(),
    )?;
    assert!(grant(&e, "/var/cache/nginx").contains(&FsAccess::WriteFile));
    assert!(!grant(&e, "/var/cache").contains(&FsAccess::WriteFile));
    assert!(
        !grant(&e, "/dev").contains(&FsAccess::WriteFile),
        "not in the file allow-list"
    );
    Ok(())
}
