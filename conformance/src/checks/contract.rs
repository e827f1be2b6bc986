//! The CRI contract (`docs/cri-contract.md`): the security contexts critest asks for, honoured
//! as runc honours them under `runc` and `palisade-compat`, and under the hardened handlers
//! either honoured too or refused, or overridden, in the documented way.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, ContainerConfig, Int64Value, LinuxSandboxSecurityContext, Mount, MountPropagation,
    PodSandboxConfig, SecurityProfile,
};

use crate::cri::{security, SLEEPER};
use crate::security::eventlog::{field, EventLog};
use crate::suite::{ensure, stdout_of, Ctx};

/// The handlers that honour every security context as it is asked for.
const RELAXED: [&str; 2] = ["runc", "palisade-compat"];

/// The RuntimeClass every refusal names as the way to run the request.
const COMPAT: &str = "palisade-compat";

fn relaxed(ctx: &Ctx) -> bool {
    RELAXED.contains(&ctx.handler.as_str())
}

/// A pod whose sandbox is privileged, as CRI requires of a pod with a privileged container.
fn privileged_pod_config(ctx: &Ctx) -> PodSandboxConfig {
    let mut cfg = ctx.pod_config();
    if let Some(linux) = cfg.linux.as_mut() {
        linux
            .security_context
            .get_or_insert_with(LinuxSandboxSecurityContext::default)
            .privileged = true;
    }
    cfg
}

/// The shims' event log from now on, under the palisade handlers (runc raises none).
fn event_log(ctx: &Ctx) -> Result<Option<EventLog>> {
    if ctx.handler == "runc" {
        return Ok(None);
    }
    EventLog::mark(ctx).map(Some)
}

/// Waits for the runtime event `rule` about pod `pod` whose message holds `part`.
async fn expect_event(log: &EventLog, pod: &str, rule: &str, part: &str) -> Result<()> {
    let found = log
        .wait_for(std::time::Duration::from_secs(10), |e| {
            field(e, "/rule/name") == rule
                && field(e, "/workload/pod") == pod
                && field(e, "/rule/message").contains(part)
        })
        .await?;
    ensure(found.is_some(), || {
        format!(
            "no {rule} event for pod {pod} naming {part:?}; events: {}",
            log.seen()
        )
    })
}

/// Under `palisade-compat`, the `hardening-relaxed` event of the container in `pod` names
/// `grant`.
async fn expect_relaxed(ctx: &Ctx, log: Option<&EventLog>, pod: &str, grant: &str) -> Result<()> {
    match log {
        Some(log) if relaxed(ctx) => expect_event(log, pod, "hardening-relaxed", grant).await,
        _ => Ok(()),
    }
}

/// Runs `cc` in a new pod (privileged when `privileged`): the container id, or the error
/// text of the call that refused it (RunPodSandbox for the pod's pause container,
/// StartContainer for the container: containerd's CRI creates the task there).
async fn run(
    ctx: &Ctx,
    cfg: &PodSandboxConfig,
    cc: &ContainerConfig,
    privileged: bool,
) -> Result<Result<String, String>> {
    let pod = match ctx.run_pod(cfg).await {
        Ok(pod) => pod,
        Err(e) if privileged => return Ok(Err(format!("{e:#}"))),
        Err(e) => return Err(e),
    };
    Ok(ctx
        .cri
        .run_container(&pod, cc, cfg)
        .await
        .map_err(|e| format!("{e:#}")))
}

fn pod_name(cfg: &PodSandboxConfig) -> String {
    cfg.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// Under a relaxed handler the container must run (under `palisade-compat` with a
/// `hardening-relaxed` event naming `grant`); under a hardened one it must be refused with a
/// message holding every one of `parts` (the field, the key, the RuntimeClass) and a
/// `hardening-refused` event. Returns the running container, or `None` once the refusal is
/// checked.
async fn run_or_refused(
    ctx: &Ctx,
    cc: &ContainerConfig,
    privileged: bool,
    parts: &[&str],
    grant: &str,
) -> Result<Option<String>> {
    let cfg = if privileged {
        privileged_pod_config(ctx)
    } else {
        ctx.pod_config()
    };
    let pod = pod_name(&cfg);
    let log = event_log(ctx)?;
    match (run(ctx, &cfg, cc, privileged).await?, relaxed(ctx)) {
        (Ok(c), true) => {
            expect_relaxed(ctx, log.as_ref(), &pod, grant).await?;
            Ok(Some(c))
        }
        (Err(e), true) => bail!("refused under {}: {e}", ctx.handler),
        (Ok(c), false) => bail!(
            "container {c} started under {}, which must refuse it",
            ctx.handler
        ),
        (Err(e), false) => {
            for part in parts.iter().chain([&COMPAT]) {
                ensure(e.contains(part), || {
                    format!("refusal does not name {part:?}: {e}")
                })?;
            }
            if let Some(log) = &log {
                expect_event(log, &pod, "hardening-refused", parts[0]).await?;
            }
            Ok(None)
        }
    }
}

/// A field of the container's `/proc/self/status` (as seen by an exec'd process).
async fn status(ctx: &Ctx, c: &str, field: &str) -> Result<String> {
    let out = ctx
        .cri
        .sh(c, &format!("grep '^{field}:' /proc/self/status"))
        .await?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no {field} in /proc/self/status: {out:?}"))
}

/// What the same container gets under `runc`, the reference.
struct Reference {
    /// CapEff: what "every capability" means here (containerd gives a privileged container
    /// its own bounding set, which on a node where containerd runs with a reduced one is less
    /// than the kernel's).
    caps: u64,
    /// The options of the `/sys` mount (containerd 1.6 mounts it read-only even for a
    /// privileged container).
    sys: String,
}

/// Runs `cc` under `runc` as the reference. Its CapEff must hold at least CAP_SYS_ADMIN,
/// CAP_NET_ADMIN and CAP_SYS_MODULE, so that a reference that itself lost them fails the
/// check instead of passing it.
async fn runc_reference(ctx: &Ctx, cc: &ContainerConfig, privileged: bool) -> Result<Reference> {
    let cfg = if privileged {
        privileged_pod_config(ctx)
    } else {
        ctx.pod_config()
    };
    std::fs::create_dir_all(&cfg.log_directory)
        .with_context(|| format!("create log dir {}", cfg.log_directory))?;
    let pod = ctx
        .cri
        .run_pod(&cfg, "runc")
        .await
        .context("reference pod under runc")?;
    ctx.track(&pod);
    let c = ctx
        .cri
        .run_container(&pod, cc, &cfg)
        .await
        .context("reference container under runc")?;
    let caps = cap_eff(ctx, &c).await?;
    ensure(caps & REFERENCE_MINIMUM == REFERENCE_MINIMUM, || {
        format!("runc's reference CapEff {caps:x} lacks SYS_ADMIN, NET_ADMIN or SYS_MODULE")
    })?;
    Ok(Reference {
        caps,
        sys: sys_options(ctx, &c).await?,
    })
}

/// The options of the container's `/sys` mount.
async fn sys_options(ctx: &Ctx, c: &str) -> Result<String> {
    let out = ctx
        .cri
        .sh(c, "awk '$2 == \"/sys\" {print $4}' /proc/self/mounts")
        .await?;
    Ok(out.trim().to_owned())
}

/// CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SYS_ADMIN.
const REFERENCE_MINIMUM: u64 = (1 << 12) | (1 << 16) | (1 << 21);

async fn cap_eff(ctx: &Ctx, c: &str) -> Result<u64> {
    let hex = status(ctx, c, "CapEff").await?;
    u64::from_str_radix(&hex, 16).with_context(|| format!("CapEff {hex:?}"))
}

/// Checks that container `c` holds the effective capabilities runc gave the same container.
async fn caps_as_under_runc(ctx: &Ctx, c: &str, want: &Reference) -> Result<()> {
    let caps = cap_eff(ctx, c).await?;
    ensure(caps == want.caps, || {
        format!(
            "CapEff {caps:x}, want every capability as under runc {:x}",
            want.caps
        )
    })
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// Host device nodes a container gets only when privileged (the first that exists is used).
const HOST_ONLY_DEVICES: [&str; 3] = ["/dev/kmsg", "/dev/loop-control", "/dev/mem"];

/// `privileged: true`: every capability, every host device, no seccomp filter, /sys mounted
/// as under runc; refused by the hardened default naming the field and `allow_privileged`.
pub async fn privileged(ctx: &Ctx) -> Result<()> {
    let mut cc = ctx.container("privileged", SLEEPER);
    security(&mut cc).privileged = true;
    let parts = ["securityContext.privileged", "allow_privileged"];
    let Some(c) = run_or_refused(ctx, &cc, true, &parts, "privileged:").await? else {
        return Ok(());
    };
    let want = runc_reference(ctx, &cc, true).await?;
    caps_as_under_runc(ctx, &c, &want).await?;
    let seccomp = status(ctx, &c, "Seccomp").await?;
    ensure(seccomp == "0", || format!("Seccomp {seccomp}, want 0"))?;
    let device = HOST_ONLY_DEVICES
        .iter()
        .find(|d| Path::new(d).exists())
        .with_context(|| format!("the host has none of {HOST_ONLY_DEVICES:?}"))?;
    ctx.cri
        .sh(&c, &format!("test -c {device}"))
        .await
        .with_context(|| format!("host device {device} in the container"))?;
    // rw or ro as under runc: containerd 1.6 mounts it read-only, later releases writable.
    let sys = sys_options(ctx, &c).await?;
    let mode = |o: &str| o.split(',').next().map(str::to_owned);
    ensure(mode(&sys) == mode(&want.sys), || {
        format!("/sys mounted {sys:?}, under runc {:?}", want.sys)
    })
}

/// `capabilities.add: [SYS_ADMIN, NET_ADMIN]`: both held; refused by the hardened default
/// naming CAP_SYS_ADMIN (the harness allows NET_ADMIN) and `allowed_added_capabilities`.
pub async fn added_capability(ctx: &Ctx) -> Result<()> {
    let mut cc = ctx.container("added", SLEEPER);
    security(&mut cc).capabilities = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into(), "NET_ADMIN".into()],
        ..Default::default()
    });
    let parts = [
        "CAP_SYS_ADMIN",
        "securityContext.capabilities.add",
        "allowed_added_capabilities",
    ];
    let grant = "capabilities: CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN beyond";
    let Some(c) = run_or_refused(ctx, &cc, false, &parts, grant).await? else {
        return Ok(());
    };
    let caps = cap_eff(ctx, &c).await?;
    ensure(
        caps & (CAP_SYS_ADMIN | CAP_NET_ADMIN) == CAP_SYS_ADMIN | CAP_NET_ADMIN,
        || format!("CapEff {caps:x} lacks SYS_ADMIN or NET_ADMIN"),
    )
}

/// `capabilities.add: [ALL]`: every capability; refused by the hardened default.
pub async fn all_capabilities_added(ctx: &Ctx) -> Result<()> {
    let mut cc = ctx.container("all-caps", SLEEPER);
    security(&mut cc).capabilities = Some(Capability {
        add_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    let parts = [
        "CAP_SYS_ADMIN",
        "securityContext.capabilities.add",
        "allowed_added_capabilities",
    ];
    let Some(c) = run_or_refused(ctx, &cc, false, &parts, "CAP_SYS_MODULE").await? else {
        return Ok(());
    };
    let want = runc_reference(ctx, &cc, false).await?;
    caps_as_under_runc(ctx, &c, &want).await
}

/// Runs a sleeper with `profile` (None: the field unset) and returns its `Seccomp:` mode;
/// without a profile, under `palisade-compat`, its `hardening-relaxed` event must name the
/// missing filter.
async fn seccomp_mode(ctx: &Ctx, profile: Option<SecurityProfile>) -> Result<(String, String)> {
    let log = event_log(ctx)?;
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("seccomp", SLEEPER);
    let unconfined = profile
        .as_ref()
        .is_none_or(|p| p.profile_type == ProfileType::Unconfined as i32);
    security(&mut cc).seccomp = profile;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    if unconfined {
        expect_relaxed(ctx, log.as_ref(), &pod_name(&cfg), "seccomp: no filter").await?;
    }
    let mode = status(ctx, &c, "Seccomp").await?;
    Ok((c, mode))
}

/// Mode 0 under the relaxed handlers; under the hardened ones palisade's profile replaces
/// the missing one (mode 2), the documented override.
fn expect_unconfined_or_overridden(ctx: &Ctx, mode: &str, asked: &str) -> Result<()> {
    let want = if relaxed(ctx) { "0" } else { "2" };
    ensure(mode == want, || {
        format!("{asked}: Seccomp {mode} under {}, want {want}", ctx.handler)
    })
}

/// `seccompProfile: Unconfined`.
pub async fn seccomp_unconfined(ctx: &Ctx) -> Result<()> {
    let profile = SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    };
    let (_, mode) = seccomp_mode(ctx, Some(profile)).await?;
    expect_unconfined_or_overridden(ctx, &mode, "Unconfined")
}

/// No seccomp profile at all: containerd's default for an unset profile is unconfined.
pub async fn seccomp_unset(ctx: &Ctx) -> Result<()> {
    let (_, mode) = seccomp_mode(ctx, None).await?;
    expect_unconfined_or_overridden(ctx, &mode, "unset")
}

/// `seccompProfile: Localhost` with a profile that refuses mkdir: every handler runs it as
/// written.
pub async fn seccomp_localhost(ctx: &Ctx) -> Result<()> {
    let path = ctx.dir.join("deny-mkdir.json");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["mkdir", "mkdirat"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1
        }]
    });
    std::fs::write(&path, profile.to_string())
        .with_context(|| format!("write {}", path.display()))?;
    let profile = SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: path.display().to_string(),
    };
    let (c, mode) = seccomp_mode(ctx, Some(profile)).await?;
    ensure(mode == "2", || format!("Seccomp {mode}, want 2"))?;
    ctx.cri
        .refused(&c, &["mkdir", "/tmp/d"], "Operation not permitted")
        .await
        .context("mkdir under the profile")?;
    ctx.cri
        .sh(&c, "touch /tmp/f && test -f /tmp/f")
        .await
        .context("what the profile allows")
        .map(drop)
}

/// `allowPrivilegeEscalation` unset (CRI's no_new_privs false): a setuid-root binary run by
/// uid 1000 gets euid 0 under the relaxed handlers; the hardened default sets no_new_privs
/// anyway (the documented override). `no_new_privs: true` holds everywhere.
pub async fn no_new_privs_false(ctx: &Ctx) -> Result<()> {
    let log = event_log(ctx)?;
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("escalate", SLEEPER);
    security(&mut cc).run_as_user = Some(Int64Value { value: 1000 });
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    expect_relaxed(ctx, log.as_ref(), &pod_name(&cfg), "no_new_privs: left off").await?;
    let nnp = status(ctx, &c, "NoNewPrivs").await?;
    let (out, _, _) = ctx
        .cri
        .exec_sync(&c, &[crate::security::attacks::PROBE_SUID, "setuid"], 10)
        .await?;
    if relaxed(ctx) {
        ensure(nnp == "0", || format!("NoNewPrivs {nnp}, want 0"))?;
        ensure(out.contains("euid=0"), || {
            format!("setuid binary did not raise euid: {out:?}")
        })?;
    } else {
        ensure(nnp == "1", || {
            format!("NoNewPrivs {nnp}, want 1 (overridden)")
        })?;
        ensure(out.contains("euid=1000"), || {
            format!("setuid binary raised euid under no_new_privs: {out:?}")
        })?;
    }
    let mut cc = ctx.container("no-escalate", SLEEPER);
    let sc = security(&mut cc);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.no_new_privs = true;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let nnp = status(ctx, &c, "NoNewPrivs").await?;
    ensure(nnp == "1", || {
        format!("no_new_privs true: NoNewPrivs {nnp}")
    })
}

/// A host directory made a shared mount point of its own (the host's root may be private,
/// and CRI refuses rslave and rshared mounts of a source that is not shared); unmounted,
/// with everything mounted below it, when dropped.
struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        mount(&[
            "--bind",
            &path.display().to_string(),
            &path.display().to_string(),
        ])?;
        let dir = Self { path };
        mount(&["--make-shared", &dir.path.display().to_string()])?;
        Ok(dir)
    }

    /// Mounts a tmpfs at `name` below the directory, holding a file `marker`.
    fn mount_tmpfs(&self, name: &str) -> Result<()> {
        let target = self.path.join(name);
        mount(&["-t", "tmpfs", "tmpfs", &target.display().to_string()])?;
        std::fs::write(target.join("marker"), "from-host\n").context("write the marker")
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // Lazy and recursive: what the host or a container mounted below goes with it.
        let _ = Command::new("umount")
            .args(["--lazy", "--recursive"])
            .arg(&self.path)
            .status();
    }
}

fn mount(args: &[&str]) -> Result<()> {
    stdout_of(Command::new("mount").args(args), &format!("mount {args:?}")).map(drop)
}

/// A container with `dir` at `/mnt/p` under `propagation`, privileged when `privileged`.
fn propagation_container(
    ctx: &Ctx,
    dir: &SharedDir,
    propagation: MountPropagation,
    privileged: bool,
) -> ContainerConfig {
    let mut cc = ctx.container("propagation", SLEEPER);
    cc.mounts = vec![Mount {
        container_path: "/mnt/p".into(),
        host_path: dir.path.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }];
    security(&mut cc).privileged = privileged;
    cc
}

/// Whether `/mnt/p/NAME/marker` (a host mount's file) is seen in the container.
async fn sees_marker(ctx: &Ctx, c: &str, name: &str) -> Result<bool> {
    let (_, _, code) = ctx
        .cri
        .exec_sync(c, &["test", "-f", &format!("/mnt/p/{name}/marker")], 10)
        .await?;
    Ok(code == 0)
}

/// `rprivate` (PROPAGATION_PRIVATE): a host mount made after the container started stays
/// out of it, while the directory itself is shared. Every handler.
pub async fn propagation_private(ctx: &Ctx) -> Result<()> {
    let dir = SharedDir::new(ctx.dir.join("prop-private"))?;
    std::fs::create_dir_all(dir.path.join("sub"))?;
    std::fs::write(dir.path.join("file"), "shared\n")?;
    let cc = propagation_container(ctx, &dir, MountPropagation::PropagationPrivate, false);
    let (pod, cfg) = ctx.pod().await?;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let seen = ctx.cri.sh(&c, "cat /mnt/p/file").await?;
    ensure(seen == "shared\n", || format!("/mnt/p/file: {seen:?}"))?;
    dir.mount_tmpfs("sub")?;
    ensure(!sees_marker(ctx, &c, "sub").await?, || {
        "a host mount reached a container whose mount is rprivate".into()
    })
}

/// `rslave` (PROPAGATION_HOST_TO_CONTAINER): a host mount made after the container started
/// appears in it. Every handler (it needs no privilege).
pub async fn propagation_rslave(ctx: &Ctx) -> Result<()> {
    let dir = SharedDir::new(ctx.dir.join("prop-rslave"))?;
    std::fs::create_dir_all(dir.path.join("sub"))?;
    let cc = propagation_container(
        ctx,
        &dir,
        MountPropagation::PropagationHostToContainer,
        false,
    );
    let (pod, cfg) = ctx.pod().await?;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    dir.mount_tmpfs("sub")?;
    ensure(sees_marker(ctx, &c, "sub").await?, || {
        "a host mount did not reach a container whose mount is rslave".into()
    })
}

/// `rshared` (PROPAGATION_BIDIRECTIONAL, which Kubernetes allows only privileged
/// containers): a host mount reaches the container and a mount the container makes reaches
/// the host. Refused by the hardened default as a privileged container.
pub async fn propagation_rshared(ctx: &Ctx) -> Result<()> {
    let dir = SharedDir::new(ctx.dir.join("prop-rshared"))?;
    std::fs::create_dir_all(dir.path.join("sub"))?;
    std::fs::create_dir_all(dir.path.join("back"))?;
    let cc = propagation_container(ctx, &dir, MountPropagation::PropagationBidirectional, true);
    let parts = ["securityContext.privileged", "allow_privileged"];
    let grant = "mount propagation to the host: rshared /mnt/p";
    let Some(c) = run_or_refused(ctx, &cc, true, &parts, grant).await? else {
        return Ok(());
    };
    dir.mount_tmpfs("sub")?;
    ensure(sees_marker(ctx, &c, "sub").await?, || {
        "a host mount did not reach a container whose mount is rshared".into()
    })?;
    ctx.cri
        .sh(
            &c,
            "mount -t tmpfs tmpfs /mnt/p/back && echo from-container > /mnt/p/back/marker",
        )
        .await?;
    let back = std::fs::read_to_string(dir.path.join("back/marker")).unwrap_or_default();
    ensure(back == "from-container\n", || {
        format!("the container's mount did not reach the host: marker {back:?}")
    })
}
