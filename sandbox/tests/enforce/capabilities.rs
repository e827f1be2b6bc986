//! Capability rules: blocks and allow-lists on the capability sets.

use super::*;

#[test]
fn capability_block_leaves_every_set_and_audit_goes_to_the_monitor() -> Result<()> {
    let mut s = spec()?;
    assert!(strings(&s["process"]["capabilities"]["bounding"]).contains(&"CAP_CHOWN".to_owned()));
    let e = enforce_policy(&mut s, policy_file!("caps"))?;
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        let caps = strings(&s["process"]["capabilities"][set]);
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()), "{set}: {caps:?}");
        assert!(caps.contains(&"CAP_KILL".to_owned()), "{set}: {caps:?}");
    }
    assert_enforcers(
        &e,
        &[
            ("matchCapabilities[0]", Enforcer::CapabilitiesBounding),
            ("matchCapabilities[1]", Enforcer::MonitorAudit),
        ],
    );
    assert_eq!(e.monitor.audit.len(), 1);
    assert!(
        e.plan.is_none(),
        "runc applies the sets; palisade-init needs no capability step"
    );
    Ok(())
}

#[test]
fn capability_allow_list_keeps_only_what_it_lists() -> Result<()> {
    let yaml = include_str!("../policies/caps-allowed.yaml");
    let (s, _) = enforced(yaml)?;
    for set in ["bounding", "effective", "permitted"] {
        assert_eq!(
            strings(&s["process"]["capabilities"][set]),
            ["CAP_NET_BIND_SERVICE"],
            "{set}: an allow-list never adds what the spec did not hold"
        );
    }
    Ok(())
}
