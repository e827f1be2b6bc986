//! `palisade-conformance demo`: one pod and container under a handler, shown step by step.

use anyhow::{bail, Result};

use crate::cri::{self, state_name, Cri};
use crate::host;
use crate::suite::Settings;

/// Runs the demo for the first handler of `settings` and removes the pod again.
pub async fn run(settings: &Settings) -> Result<()> {
    let handler = settings
        .handlers
        .first()
        .map(String::as_str)
        .unwrap_or("palisade");
    let cri = Cri::connect(&settings.cri_socket).await?;
    let name = format!("demo-{}", std::process::id());
    let log_dir = settings.work_dir.join(&name);
    std::fs::create_dir_all(&log_dir)?;
    let pod_cfg = cri::pod_config(&name, &name, &log_dir, &settings.cgroup_root);
    println!("== RunPodSandbox {name} with runtime_handler {handler:?}");
    let pod = cri.run_pod(&pod_cfg, handler).await?;
    let result = show(&cri, settings, handler, &pod, &pod_cfg).await;
    println!("== StopPodSandbox + RemovePodSandbox {pod}");
    let removed = cri.remove_pod(&pod).await;
    result?;
    removed
}

async fn show(
    cri: &Cri,
    settings: &Settings,
    handler: &str,
    pod: &str,
    pod_cfg: &k8s_cri::v1::PodSandboxConfig,
) -> Result<()> {
    println!("   pod sandbox id {pod}");
    let cfg = cri::container_config("demo", 0, &settings.image, &["sleep", "3600"]);
    println!(
        "== CreateContainer + StartContainer: {} sleep 3600",
        settings.image
    );
    let c = cri.run_container(pod, &cfg, pod_cfg).await?;
    let st = cri.container_status(&c).await?;
    let pid = cri.container_pid(&c).await?;
    println!("== ContainerStatus");
    println!("   id       {c}");
    println!("   state    {}", state_name(st.state));
    println!("   image    {}", st.image_ref);
    println!("   pid      {pid} (host)");
    println!("   log      {}", st.log_path);
    let (shim, exe, cmdline) = host::expect_shim(pid, handler)?;
    println!("== The container's shim (parent process of pid {pid})");
    println!("   pid      {shim}");
    println!("   exe      {}", exe.display());
    println!("   cmdline  {cmdline}");
    println!("== ExecSync: sh -c 'id; hostname; ps'");
    let (out, err, code) = cri
        .exec_sync(&c, &["sh", "-c", "id; hostname; ps"], 10)
        .await?;
    for line in out.lines().chain(err.lines()) {
        println!("   | {line}");
    }
    println!("   exit code {code}");
    if code != 0 {
        bail!("exec exited {code}");
    }
    Ok(())
}
