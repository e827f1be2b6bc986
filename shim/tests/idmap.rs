//! Idmapped overlay root filesystems against the running kernel (root): the lower layers are
//! seen through the pod's mapping, writes land in the upper layer, and nothing stays mounted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;

use containerd_shim::protos::api::Mount;
use palisade_shim::idmap::IdmappedOverlay;

fn mounted_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// The overlay mount containerd 2.x hands the shim for a pod mapped to host ids 327680 on:
/// `lowers` (directories under `t`), `t/upper` and `t/work`.
fn idmapped_overlay(t: &Path, lowers: &[&str]) -> Mount {
    let lowerdir: Vec<String> = lowers
        .iter()
        .map(|l| t.join(l).display().to_string())
        .collect();
    Mount {
        type_: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", lowerdir.join(":")),
            format!("upperdir={}", t.join("upper").display()),
            format!("workdir={}", t.join("work").display()),
            "uidmap=0:327680:65536".into(),
            "gidmap=0:327680:65536".into(),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn lower_layers_are_seen_through_the_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["l1", "l2", "upper", "work", "rootfs"] {
        std::fs::create_dir(t.join(d)).unwrap();
    }
    std::fs::write(t.join("l1/owned-by-root"), "a").unwrap();
    std::fs::write(t.join("l2/owned-by-1000"), "b").unwrap();
    chown(t.join("l2/owned-by-1000"), Some(1000), Some(1000)).unwrap();
    // containerd's snapshotter hands the upper layer to the mapped root
    chown(t.join("upper"), Some(327_680), Some(327_680)).unwrap();
    let m = idmapped_overlay(t, &["l1", "l2"]);
    let overlay = IdmappedOverlay::parse(&m).unwrap().expect("idmap options");
    let rootfs = t.join("rootfs");
    let scratch = t.join("idmapped");
    overlay.mount(&m, &scratch, &rootfs).await.unwrap();

    let root_file = std::fs::metadata(rootfs.join("owned-by-root")).unwrap();
    let user_file = std::fs::metadata(rootfs.join("owned-by-1000")).unwrap();
    let (root_uid, user_uid) = (root_file.uid(), user_file.uid());
    let (root_gid, root_dir_uid) = (root_file.gid(), std::fs::metadata(&rootfs).unwrap().uid());
    std::fs::write(rootfs.join("new"), "c").unwrap();
    let upper_has_new = t.join("upper/new").exists();
    let scratch_left = scratch.exists();
    let scratch_mounts = mounted_under(&scratch);
    nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).unwrap();

    assert_eq!(
        (root_uid, root_gid),
        (327_680, 327_680),
        "root's file in the lower layer"
    );
    assert_eq!(user_uid, 328_680, "uid 1000's file in the lower layer");
    assert_eq!(
        root_dir_uid, 327_680,
        "the root directory (from the upper layer)"
    );
    assert!(
        upper_has_new,
        "a write through the overlay lands in the upper layer"
    );
    assert!(!scratch_left, "scratch directory left behind");
    assert!(
        scratch_mounts.is_empty(),
        "scratch mounts left: {scratch_mounts:?}"
    );
    assert!(
        mounted_under(t).is_empty(),
        "mounts left: {:?}",
        mounted_under(t)
    );
}

#[tokio::test]
async fn a_missing_lower_layer_fails_and_leaves_nothing_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["l1", "upper", "work", "rootfs"] {
        std::fs::create_dir(t.join(d)).unwrap();
    }
    let m = idmapped_overlay(t, &["l1", "gone"]);
    let overlay = IdmappedOverlay::parse(&m).unwrap().expect("idmap options");
    let err = overlay
        .mount(&m, &t.join("idmapped"), &t.join("rootfs"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gone"), "{err}");
    assert!(
        mounted_under(t).is_empty(),
        "mounts left: {:?}",
        mounted_under(t)
    );
    assert!(
        !t.join("idmapped").exists(),
        "scratch directory left behind"
    );
}
