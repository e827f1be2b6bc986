//! palisade-strict: a read-only root, writes only in the rw mounts and `writable_paths`
//! (`/tmp` in the harness), and signals scoped to the sender's landlock domain.

use anyhow::{Context as _, Result};

use super::attacks::{shell, sleeper};
use super::{Observed, Scope, SecCheck, STRICT};
use crate::cri;
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub fn all() -> Vec<SecCheck> {
    let strict = Scope::CompareWith(STRICT);
    // Each kind of write landlock knows is attempted outside the writable paths (under runc
    // each succeeds, which shows the command itself works). Under strict the read-only root
    // refuses them (EROFS) and the landlock write allow-list would too; init/tests/binary.rs
    // shows landlock's share alone, on a writable filesystem, with the same handled rights.
    // `truncate` is truncate(2) by path: no open for writing, so only the truncate right (or a
    // read-only mount) stops it; `otrunc` is `O_RDONLY|O_TRUNC`, which truncates without asking
    // for the write_file right; the `mv` is a rename into another directory (landlock's refer
    // right); /proc is a read-write mount, but a kernel interface strict mode grants no writes
    // in.
    vec![
        sec_check!("strict_root_readonly", 60, strict, shell: "echo x > /etc/palisade-strict"),
        sec_check!("strict_write_home", 60, strict,
            shell: "mkdir -p /home/tester/new && echo x > /home/tester/new/f"),
        sec_check!("strict_truncate_path", 60, strict, probe: ["truncate", "/etc/group"]),
        sec_check!("strict_truncate_open_rdonly", 60, strict, probe: ["otrunc", "/etc/passwd"]),
        sec_check!("strict_remove_file", 60, strict, shell: "rm /etc/group"),
        sec_check!("strict_remove_dir", 60, strict, shell: "rmdir /var/tmp"),
        sec_check!("strict_rename_across_dirs", 60, strict, shell: "mv /etc/group /root/group"),
        sec_check!("strict_hard_link", 60, strict, shell: "ln /etc/passwd /root/passwd"),
        sec_check!("strict_symlink", 60, strict, shell: "ln -s /tmp/x /etc/palisade-link"),
        sec_check!("strict_mkfifo", 60, strict, shell: "mkfifo /etc/palisade-fifo"),
        sec_check!("strict_mknod_char", 60, strict, shell: "mknod /etc/palisade-null c 1 3"),
        sec_check!("strict_mknod_block", 60, strict, shell: "mknod /etc/palisade-loop b 7 0"),
        sec_check!("strict_bind_unix_socket", 60, strict,
            probe: ["bindunix", "/etc/palisade.sock"]),
        sec_check!("strict_write_proc_self", 60, strict, shell: "echo renamed > /proc/self/comm"),
        sec_check!("strict_" + writable_paths, 60, Scope::Only(STRICT)),
        sec_check!("strict_" + signal_pid1, 60, strict),
    ]
}

/// What strict mode keeps writable: `/tmp` (writable_paths) and a read-write volume.
async fn writable_paths(ctx: &Ctx) -> Result<Observed> {
    let src = ctx.dir.join("volume");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let c = sleeper(ctx, |cc| {
        cc.mounts = vec![cri::bind_mount("/data", &src, false)];
    })
    .await?;
    let out = ctx
        .cri
        .sh(
            &c,
            "echo t > /tmp/f && cat /tmp/f && echo v > /data/f && cat /data/f",
        )
        .await?;
    ensure(out == "t\nv\n", || {
        format!("writes in /tmp and /data: {out:?}")
    })?;
    let host = std::fs::read_to_string(src.join("f")).context("read the volume's file")?;
    ensure(host == "v\n", || {
        format!("volume file on the host: {host:?}")
    })?;
    let root = shell(ctx, &c, "echo x > /palisade-strict").await?;
    ensure(root.blocked, || format!("write in / {}", root.detail))?;
    Ok(Observed::blocked(format!(
        "(/tmp and the volume writable; / {})",
        root.detail
    )))
}

/// An exec'd shell signalling the container's init, which is outside its landlock domain.
async fn signal_pid1(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    let o = shell(ctx, &c, "kill -0 1").await?;
    // The shell may still signal itself and its own children.
    ctx.cri
        .sh(&c, "kill -0 $$ && sleep 30 & kill $! && wait $!; true")
        .await?;
    Ok(o)
}
