//! The three exports of a learned profile, made by the real CLI (`palisade profile export`)
//! and checked: the KubeArmorPolicy by `palisade policy check`, the seccomp profile and the
//! NetworkPolicy read back strictly and held to what the workload was seen doing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use palisade_profile::export::seccomp::SeccompProfile;
use palisade_profile::WorkloadId;
use serde_json::Value;

use crate::suite::{ensure, Ctx};

/// Runs the CLI with `args` (and `--state-dir STATE` when given); its status and what it
/// printed (stdout, then stderr).
pub(super) fn cli(ctx: &Ctx, args: &[&str], state: Option<&Path>) -> Result<(bool, String)> {
    let cli = super::status::cli(ctx)?;
    let mut cmd = std::process::Command::new(&cli);
    cmd.args(args);
    if let Some(state) = state {
        cmd.arg("--state-dir").arg(state);
    }
    let out = cmd
        .output()
        .with_context(|| format!("run {}", cli.display()))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Exports `workload` in `format` into the run directory; the file.
fn export(ctx: &Ctx, state: &Path, workload: &WorkloadId, format: &str) -> Result<PathBuf> {
    let file = ctx.dir.join(format!("profile-export-{format}"));
    let name = workload.to_string();
    let path = file.display().to_string();
    let args = ["profile", "export", &name, "--format", format, "-o", &path];
    let (ok, out) = cli(ctx, &args, Some(state))?;
    ensure(ok && file.exists(), || {
        format!("palisade profile export --format {format}: {out}")
    })?;
    Ok(file)
}

/// Exports the three documents of `workload`, which listened on `port` (TCP) and called
/// `peer` (TCP), and checks each; a summary.
pub fn exports_validate(
    ctx: &Ctx,
    state: &Path,
    workload: &WorkloadId,
    port: u16,
    peer: SocketAddr,
) -> Result<String> {
    let kubearmor = export(ctx, state, workload, "kubearmor")?;
    let (ok, out) = cli(
        ctx,
        &["policy", "check", &kubearmor.display().to_string()],
        None,
    )?;
    ensure(ok, || {
        format!("palisade policy check of the KubeArmor export: {out}")
    })?;

    let seccomp = export(ctx, state, workload, "seccomp")?;
    let text = std::fs::read_to_string(&seccomp)?;
    let profile: SeccompProfile =
        serde_json::from_str(&text).context("the seccomp export does not read back")?;
    let allowed: Vec<&str> = profile
        .syscalls
        .iter()
        .filter(|g| g.action == "SCMP_ACT_ALLOW")
        .flat_map(|g| g.names.iter().map(String::as_str))
        .collect();
    ensure(
        profile.default_action == "SCMP_ACT_ERRNO"
            && profile.architectures == ["SCMP_ARCH_X86_64"]
            && ["execve", "connect", "exit_group", "openat"]
                .iter()
                .all(|c| allowed.contains(c))
            && !allowed.contains(&"unshare"),
        || {
            format!(
                "the seccomp export: default {}, architectures {:?}, {} calls allowed: {allowed:?}",
                profile.default_action,
                profile.architectures,
                allowed.len()
            )
        },
    )?;

    let netpol = export(ctx, state, workload, "networkpolicy")?;
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&netpol)?)
        .context("the NetworkPolicy export does not read back")?;
    let to_peer = format!("{}/32", peer.ip());
    let port_is = |p: &Value, want: u16| {
        p["port"].as_u64() == Some(u64::from(want)) && p["protocol"] == "TCP"
    };
    let ingress_ok = doc["spec"]["ingress"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            r["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| port_is(p, port)))
        })
    });
    let egress_ok = egress_allows(&doc, &to_peer, peer.port(), "TCP");
    let types = doc["spec"]["policyTypes"].as_array();
    ensure(
        doc["apiVersion"] == "networking.k8s.io/v1"
            && doc["kind"] == "NetworkPolicy"
            && doc["spec"]["podSelector"].is_object()
            && types.is_some_and(|t| t.len() == 2)
            && ingress_ok
            && egress_ok,
        || {
            format!(
                "the NetworkPolicy export ({to_peer} port {} egress, port {port} ingress): {doc}",
                peer.port()
            )
        },
    )?;
    Ok(format!(
        "exports: KubeArmorPolicy accepted by palisade policy check, seccomp ({} calls allowed, unshare not), NetworkPolicy (ingress TCP {port}, egress {to_peer} TCP {})",
        allowed.len(),
        peer.port()
    ))
}

/// The capabilities the KubeArmor export (written by [`exports_validate`]) allows must be
/// exactly `want`, what the workload itself used (none of the runtime's: runc's init and
/// palisade-init set the process up with `setuid`, `setgid`, `setpcap`), where the recording
/// `r` could observe capabilities; where it could not, the export must allow none. A summary.
pub fn capabilities_exported(
    ctx: &Ctx,
    r: &palisade_profile::Recording,
    want: &[&str],
) -> Result<String> {
    let file = ctx.dir.join("profile-export-kubearmor");
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)
        .context("the KubeArmor export does not read back")?;
    let mut exported: Vec<&str> = doc["spec"]["capabilities"]["matchCapabilities"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|c| c["capability"].as_str())
                .collect()
        })
        .unwrap_or_default();
    exported.sort_unstable();
    if !r.capabilities_observed() {
        ensure(exported.is_empty(), || {
            format!("capabilities not observable, the export allows {exported:?}")
        })?;
        return Ok("capabilities not observable on this kernel, none exported".into());
    }
    let mut want = want.to_vec();
    want.sort_unstable();
    let runtime: Vec<&str> = r.runtime_capabilities.iter().map(|c| c.name).collect();
    ensure(exported == want, || {
        format!(
            "the export allows capabilities {exported:?}, the workload used {want:?} (recorded as the runtime's: {runtime:?})"
        )
    })?;
    let shown = |l: &[&str]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.join(",")
        }
    };
    Ok(format!(
        "capabilities exported: {} (the runtime's, not exported: {})",
        shown(&exported),
        shown(&runtime)
    ))
}

/// Exports `workload`'s NetworkPolicy and checks that it lets it send to `peer` over UDP (a
/// peer learned from unconnected sends); a summary.
pub fn netpol_udp_peer(
    ctx: &Ctx,
    state: &Path,
    workload: &WorkloadId,
    peer: SocketAddr,
) -> Result<String> {
    let netpol = export(ctx, state, workload, "networkpolicy")?;
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&netpol)?)
        .context("the NetworkPolicy export does not read back")?;
    let to_peer = format!("{}/32", peer.ip());
    let found = egress_allows(&doc, &to_peer, peer.port(), "UDP");
    ensure(found, || {
        format!(
            "the NetworkPolicy export has no egress to {to_peer} UDP {}: {doc}",
            peer.port()
        )
    })?;
    Ok(format!(
        "NetworkPolicy egress {to_peer} UDP {}",
        peer.port()
    ))
}

/// Whether a NetworkPolicy's egress has a rule to `cidr` (an `ipBlock`) on `port` over
/// `protocol`.
fn egress_allows(doc: &Value, cidr: &str, port: u16, protocol: &str) -> bool {
    doc["spec"]["egress"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            r["to"]
                .as_array()
                .is_some_and(|to| to.iter().any(|t| t["ipBlock"]["cidr"] == cidr))
                && r["ports"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["port"].as_u64() == Some(u64::from(port)) && p["protocol"] == protocol
                    })
                })
        })
    })
}
