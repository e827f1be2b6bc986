//! Tests of the promotion and rollback machine, with fixed times.

use super::*;
use crate::record::WorkloadId;

const T0: u64 = 1_000_000;

/// Asserts that `e` is of `kind` and went from stage `from` to `to`.
fn assert_moved(e: &Event, kind: EventKind, from: Stage, to: Stage) {
    assert_eq!((e.kind, e.from, e.to), (kind, from, to), "{e:?}");
}

fn rule() -> Rule {
    Rule {
        min_learn: 100,
        min_observations: 3,
        min_audit: 50,
        min_canary: 20,
        quiet_window: 30,
        restart_window: 60,
        restart_limit: 1,
        departure_window: 10,
        departure_limit: 3,
    }
}

fn learned() -> Recording {
    let mut r = Recording::new(WorkloadId::new("shop", "frontend").unwrap());
    for name in ["accept4", "read", "write"] {
        r.observe(T0, &Observation::Syscall { name: name.into() });
    }
    r
}

fn departure(at: u64, pod: &str, name: &str) -> Departure {
    Departure {
        at,
        pod: pod.into(),
        refused: true,
        observation: Observation::Syscall { name: name.into() },
    }
}

/// A machine driven by the rule up to `stage`; returns it and the time it got there.
fn at_stage(stage: Stage) -> (StageState, u64) {
    let (rec, rule) = (learned(), rule());
    let mut s = StageState::new(T0);
    let mut now = T0;
    while s.stage != stage {
        now += 100;
        s.tick(now, &rec, &rule).unwrap();
    }
    (s, now)
}

#[test]
fn the_rule_promotes_step_by_step() {
    let (rec, rule) = (learned(), rule());
    let mut s = StageState::new(T0);
    assert_eq!(s.mode_for("p1"), Mode::Learn);
    assert_eq!(s.tick(T0 + 99, &rec, &rule), None, "too early");
    let e = s.tick(T0 + 100, &rec, &rule).unwrap();
    assert_moved(&e, EventKind::Promoted, Stage::Learn, Stage::Audit);
    assert_eq!(e.trigger, Trigger::Rule);
    assert!(e.reason.contains("3 observations"), "{}", e.reason);
    assert_eq!(s.mode_for("p1"), Mode::Audit);

    assert_eq!(s.tick(T0 + 149, &rec, &rule), None, "min_audit not reached");
    let e = s.tick(T0 + 150, &rec, &rule).unwrap();
    assert_eq!((e.from, e.to), (Stage::Audit, Stage::Canary));
    assert_eq!(
        s.mode_for("p2"),
        Mode::Enforce,
        "the first pod to ask is the canary"
    );
    assert_eq!(s.mode_for("p1"), Mode::Audit);
    assert_eq!(s.mode_for("p2"), Mode::Enforce);
    s.pod_gone("p2");
    assert_eq!(s.mode_for("p1"), Mode::Enforce);

    let e = s.tick(T0 + 170, &rec, &rule).unwrap();
    assert_eq!((e.from, e.to), (Stage::Canary, Stage::Enforce));
    assert_eq!(s.mode_for("p3"), Mode::Enforce);
    assert_eq!(
        s.tick(T0 + 10_000, &rec, &rule),
        None,
        "enforce is the last stage"
    );
}

#[test]
fn too_few_observations_keep_learning() {
    let mut rec = Recording::new(WorkloadId::new("shop", "frontend").unwrap());
    rec.observe(
        T0,
        &Observation::Syscall {
            name: "read".into(),
        },
    );
    let mut s = StageState::new(T0);
    assert_eq!(s.tick(T0 + 1000, &rec, &rule()), None);
    assert_eq!(s.stage, Stage::Learn);
}

#[test]
fn departures_in_audit_delay_promotion_until_quiet() {
    let (mut s, now) = at_stage(Stage::Audit);
    let (rec, rule) = (learned(), rule());
    assert_eq!(
        s.departure(departure(now + 40, "p1", "ptrace"), &rule),
        None,
        "audit never rolls back"
    );
    assert_eq!(s.tick(now + 60, &rec, &rule), None, "a departure 20s ago");
    assert_eq!(s.departures.len(), 1);
    let e = s.tick(now + 71, &rec, &rule).unwrap();
    assert_eq!(e.to, Stage::Canary, "quiet for 31s");
}

#[test]
fn a_lossy_recording_refuses_promotion_with_the_reason_once() {
    let mut rec = learned();
    rec.add_drops(7);
    let mut s = StageState::new(T0);
    let e = s.tick(T0 + 100, &rec, &rule()).unwrap();
    assert_eq!(e.kind, EventKind::PromotionRefused);
    assert_eq!(e.to, Stage::Learn);
    assert!(
        e.reason.contains("lossy") && e.reason.contains('7'),
        "{}",
        e.reason
    );
    assert_eq!(s.tick(T0 + 200, &rec, &rule()), None, "reported once");
    let err = s.command(T0 + 300, Command::Promote, &mut rec).unwrap_err();
    assert!(matches!(err, StageError::NotPromotable { .. }));
    assert!(err.to_string().contains("lossy"), "{err}");
    assert!(s
        .command(T0 + 300, Command::Pin(Stage::Enforce), &mut rec)
        .is_err());
    assert_eq!(s.stage, Stage::Learn);
}

#[test]
fn a_restart_after_promotion_rolls_back_with_evidence() {
    let (mut s, now) = at_stage(Stage::Canary);
    let rule = rule();
    assert_eq!(s.mode_for("p1"), Mode::Enforce);
    assert_eq!(
        s.departure(departure(now + 1, "p1", "unshare"), &rule),
        None
    );
    let e = s.pod_restarted(now + 5, "p1", &rule).unwrap();
    assert_moved(&e, EventKind::RolledBack, Stage::Canary, Stage::Audit);
    assert!(e.reason.contains("pod p1 restarted"), "{}", e.reason);
    assert_eq!(e.evidence.len(), 1);
    assert_eq!(
        e.evidence[0].observation,
        Observation::Syscall {
            name: "unshare".into()
        }
    );
    assert_eq!(s.mode_for("p1"), Mode::Audit);
    assert_eq!(s.canary_pod, None);
}

#[test]
fn a_jump_in_refusals_rolls_enforce_back() {
    let (mut s, now) = at_stage(Stage::Enforce);
    let rule = rule();
    assert_eq!(
        s.departure(departure(now + 1, "p1", "unshare"), &rule),
        None
    );
    // Outside the 10s window of the next two: no rollback yet.
    assert_eq!(
        s.departure(departure(now + 20, "p1", "unshare"), &rule),
        None
    );
    assert_eq!(s.departure(departure(now + 25, "p2", "mount"), &rule), None);
    let e = s
        .departure(departure(now + 28, "p2", "mount"), &rule)
        .unwrap();
    assert_moved(&e, EventKind::RolledBack, Stage::Enforce, Stage::Audit);
    assert!(
        e.reason.starts_with("3 departures within 10s"),
        "{}",
        e.reason
    );
    let names: Vec<_> = e.evidence.iter().map(|d| d.observation.clone()).collect();
    assert_eq!(
        names,
        vec![Observation::Syscall {
            name: "mount".into()
        }],
        "the distinct departures of the window"
    );
    assert_eq!(
        s.departures.len(),
        2,
        "all pending departures stay for the operator"
    );
}

#[test]
fn pinned_workloads_neither_promote_nor_roll_back() {
    let (mut s, now) = at_stage(Stage::Enforce);
    let (mut rec, rule) = (learned(), rule());
    let e = s
        .command(now, Command::Pin(Stage::Enforce), &mut rec)
        .unwrap();
    assert_moved(&e, EventKind::Pinned, Stage::Enforce, Stage::Enforce);
    let e = s.pod_restarted(now + 1, "p1", &rule).unwrap();
    assert_eq!(e.kind, EventKind::RollbackHeld);
    assert_eq!(s.stage, Stage::Enforce);
    let e = s.command(now + 2, Command::Unpin, &mut rec).unwrap();
    assert_eq!(e.kind, EventKind::Unpinned);
    assert!(matches!(
        s.command(now + 3, Command::Unpin, &mut rec),
        Err(StageError::NotPinned(_))
    ));

    let mut l = StageState::new(T0);
    l.command(T0, Command::Pin(Stage::Learn), &mut rec).unwrap();
    assert_eq!(l.tick(T0 + 10_000, &rec, &rule), None, "held in learn");
    let e = l
        .command(T0 + 1, Command::Pin(Stage::Audit), &mut rec)
        .unwrap();
    assert_eq!((e.from, e.to), (Stage::Learn, Stage::Audit));
    assert_eq!(l.since, T0 + 1);
}

#[test]
fn operator_promotes_and_accepts_departures() {
    let (mut rec, rule) = (learned(), rule());
    let mut s = StageState::new(T0);
    let e = s.command(T0 + 1, Command::Promote, &mut rec).unwrap();
    assert_eq!((e.trigger, e.to), (Trigger::Operator, Stage::Audit));
    assert!(matches!(
        s.command(T0 + 2, Command::Accept, &mut rec),
        Err(StageError::NothingToAccept(_))
    ));
    s.departure(departure(T0 + 3, "p1", "ptrace"), &rule);
    s.departure(departure(T0 + 4, "p2", "ptrace"), &rule);
    assert_eq!(s.departures.len(), 1, "deduplicated");
    let before = Observation::Syscall {
        name: "ptrace".into(),
    };
    assert!(!rec.covers(&before));
    let e = s.command(T0 + 5, Command::Accept, &mut rec).unwrap();
    assert_eq!(e.kind, EventKind::Accepted);
    assert_eq!(e.evidence.len(), 1);
    assert!(rec.covers(&before), "accepted into the recording");
    assert!(s.departures.is_empty());
    for stage in [Stage::Canary, Stage::Enforce] {
        assert_eq!(
            s.command(T0 + 6, Command::Promote, &mut rec).unwrap().to,
            stage
        );
    }
    assert!(matches!(
        s.command(T0 + 7, Command::Promote, &mut rec),
        Err(StageError::AtEnd(_))
    ));
}

#[test]
fn state_and_events_serialize() {
    let (mut s, now) = at_stage(Stage::Canary);
    let e = s.pod_restarted(now + 1, "p9", &rule()).unwrap();
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("\"kind\":\"rolled_back\""), "{json}");
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
    let state: StageState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(state, s);
    let cmd: Command = serde_json::from_str(r#"{"command":"pin","stage":"canary"}"#).unwrap();
    assert_eq!(cmd, Command::Pin(Stage::Canary));
}

#[test]
fn oversized_departures_are_counted_not_kept() {
    let (mut s, now) = at_stage(Stage::Audit);
    let long = Departure {
        at: now + 1,
        pod: "p1".into(),
        refused: false,
        observation: Observation::Open {
            path: format!("/{}", "a".repeat(2000)),
            write: true,
        },
    };
    assert_eq!(s.departure(long, &rule()), None);
    assert!(s.departures.is_empty());
    assert_eq!(s.departures_beyond, 1);
    assert_eq!(s.recent_departures, vec![now + 1], "still delays promotion");
}

#[test]
fn a_second_create_of_a_pods_container_is_a_restart() {
    let rule = rule();
    // In learn and audit a Create counts nothing towards rollback.
    let mut learning = StageState::new(T0);
    assert_eq!(learning.container_created(T0, "sb1/app", "p1", &rule), None);
    assert!(learning.seen.is_empty());
    let (mut s, now) = at_stage(Stage::Enforce);
    assert_eq!(s.container_created(now + 1, "sb1/app", "p1", &rule), None);
    assert_eq!(s.container_created(now + 2, "sb2/app", "p2", &rule), None);
    assert_eq!(
        s.container_created(now + 3, "sb1/sidecar", "p1", &rule),
        None
    );
    let e = s
        .container_created(now + 4, "sb1/app", "p1", &rule)
        .expect("a restart rolls enforce back");
    assert_moved(&e, EventKind::RolledBack, Stage::Enforce, Stage::Audit);
    assert_eq!(e.trigger, Trigger::Rule);
    assert!(e.reason.starts_with("pod p1 restarted"), "{}", e.reason);
    // Bounded: the oldest are forgotten.
    for i in 0..(MAX_SEEN + 10) {
        s.container_created(now + 5, &format!("x{i}/app"), "p", &rule);
    }
    assert_eq!(s.seen.len(), MAX_SEEN);
}

#[test]
fn stage_names_are_the_documents_and_read_back() {
    for s in [Stage::Learn, Stage::Audit, Stage::Canary, Stage::Enforce] {
        assert_eq!(Stage::named(s.name()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.name());
    }
    assert_eq!(Stage::named("on"), None);
}
