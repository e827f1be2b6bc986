//! palisade-strict: the read-only root and its landlock ruleset, old kernels, degrading.

use super::*;

#[test]
fn strict_makes_the_root_read_only_and_writes_land_only_in_rw_mounts() -> Result<()> {
    let mut s = spec()?;
    let cfg = StrictConfig {
        writable_paths: vec!["/tmp".into(), "/dev/shm/cache".into()],
        ..StrictConfig::default()
    };
    let e = enforce(ID, &mut s, None, Some(&cfg), &node())?;
    assert_eq!(s["root"]["readonly"], true);
    let ll = landlock(&e);
    assert_eq!(ll.required_abi, 6, "scoping needs abi 6");
    assert!(!ll.best_effort);
    assert!(ll.scope.signal && ll.scope.abstract_unix_socket);
    let handled: BTreeSet<FsAccess> = ll
        .handled_fs
        .clone()
        .expect("handled")
        .into_iter()
        .collect();
    // Every kind of write and nothing else: reads, execute and ioctl stay unhandled, since
    // handling them would make every open walk the path for no protection strict asks for
    // (truncate already does; docs/benchmarks.md). init/tests/binary.rs runs this same set.
    let unhandled = [
        FsAccess::Execute,
        FsAccess::ReadFile,
        FsAccess::ReadDir,
        FsAccess::IoctlDev,
    ];
    let writes: BTreeSet<FsAccess> = FsAccess::ALL
        .into_iter()
        .filter(|a| !unhandled.contains(a))
        .collect();
    assert_eq!(handled, writes);
    let paths: BTreeSet<&str> = ll.fs.iter().filter_map(|r| r.path.to_str()).collect();
    let want: BTreeSet<&str> = [
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/etc/hosts",
        "/dev/termination-log",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/dev/shm",
        "/tmp",
    ]
    .into();
    assert_eq!(
        paths, want,
        "read-only, proc, sysfs and cgroup mounts are not writable"
    );
    assert!(grant(&e, "/tmp").contains(&FsAccess::MakeReg));
    // /tmp is on the read-only root: it gets a tmpfs; /dev/shm/cache is under a rw mount.
    let tmpfs: Vec<&Value> = s["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "tmpfs" && m["destination"] == "/tmp")
        .collect();
    assert_eq!(tmpfs.len(), 1);
    assert!(strings(&tmpfs[0]["options"]).contains(&"noexec".to_owned()));
    assert!(!s["mounts"].to_string().contains("/dev/shm/cache"));
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    Ok(())
}

#[test]
fn strict_without_scoping_needs_abi_3_only() -> Result<()> {
    let mut s = spec()?;
    let cfg = StrictConfig {
        scope_signals: false,
        scope_abstract_unix: false,
        ..StrictConfig::default()
    };
    let e = enforce(ID, &mut s, None, Some(&cfg), &kernel(Some(3), true))?;
    let ll = landlock(&e);
    assert_eq!(ll.required_abi, 3, "truncate is abi 3");
    assert!(!ll.scope.signal);
    Ok(())
}

#[test]
fn strict_on_an_old_kernel_is_refused_unless_degrading() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let err = enforce(
        ID,
        &mut s,
        None,
        Some(&StrictConfig::default()),
        &kernel(Some(3), true),
    )
    .unwrap_err();
    assert!(matches!(err, EnforceError::LandlockAbi { required: 6, .. }));
    assert_eq!(
        err.to_string(),
        "container abc123: landlock: needs abi 6 for scope.signal, scope.abstract_unix_socket, \
         the kernel has abi 3; refused (allow_degraded is off)"
    );
    assert_eq!(s, before, "a refused spec is left as it was");

    let e = enforce(ID, &mut s, None, Some(&degraded()), &kernel(Some(3), true))?;
    let ll = landlock(&e);
    assert!(ll.best_effort);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("running without scope.signal, scope.abstract_unix_socket"),
        "{}",
        e.warnings[0]
    );

    let e = enforce(
        ID,
        &mut spec()?,
        None,
        Some(&degraded()),
        &kernel(None, true),
    )?;
    assert!(landlock(&e).best_effort);
    assert!(e.warnings[0].contains("no landlock"), "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("every landlock rule"),
        "{:?}",
        e.warnings
    );
    Ok(())
}

#[test]
fn degraded_landlock_is_not_reported_as_enforced() -> Result<()> {
    let p = policy(policy_file!("process-allow"))?;
    let e = enforce(
        ID,
        &mut spec()?,
        Some(&p),
        Some(&degraded()),
        &kernel(None, true),
    )?;
    assert_eq!(
        rule_on(&e, "/bin/bash").enforcer.to_string(),
        "unenforceable: the kernel has no landlock (allow_degraded)"
    );
    let e = enforce(
        ID,
        &mut spec()?,
        Some(&p),
        Some(&degraded()),
        &kernel(Some(2), true),
    )?;
    let bash = rule_on(&e, "/bin/bash");
    assert_eq!(bash.enforcer, Enforcer::Landlock);
    assert_eq!(
        bash.note.as_deref(),
        Some(
            "best effort: the kernel lacks truncate (the seccomp filter allows truncate(2)), \
             scope.signal, scope.abstract_unix_socket"
        )
    );
    Ok(())
}

#[test]
fn strict_refuses_a_relative_writable_path() -> Result<()> {
    let cfg = StrictConfig {
        writable_paths: vec!["tmp".into()],
        ..StrictConfig::default()
    };
    let err = enforce(ID, &mut spec()?, None, Some(&cfg), &node()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container abc123: strict: writable path \"tmp\": must be absolute, without .. or //"
    );
    Ok(())
}
