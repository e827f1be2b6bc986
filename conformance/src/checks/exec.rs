//! ExecSync and the streaming exec/attach endpoints (WebSocket, with and without a TTY).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_cri::v1::{AttachRequest, ContainerConfig, ExecRequest};

use crate::stream::Session;
use crate::suite::{ensure, Ctx};

const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn exec_sync(ctx: &Ctx) -> Result<()> {
    let (_pod, c, _) = ctx.pod_with_sleeper().await?;
    let (out, err, code) = ctx
        .cri
        .exec_sync(
            &c,
            &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
            10,
        )
        .await?;
    ensure(out == "to-out\n", || format!("stdout {out:?}"))?;
    ensure(err == "to-err\n", || format!("stderr {err:?}"))?;
    ensure(code == 7, || format!("exit code {code}, want 7"))?;
    let (out, _, code) = ctx.cri.exec_sync(&c, &["true"], 10).await?;
    ensure(out.is_empty() && code == 0, || {
        format!("true: {out:?} exit {code}")
    })?;
    // A command that outlives its timeout is cut off and reported as an error.
    let started = Instant::now();
    let res = ctx.cri.exec_sync(&c, &["sleep", "60"], 2).await;
    let took = started.elapsed();
    ensure(res.is_err(), || {
        format!("exec past its 2s timeout returned {res:?}")
    })?;
    ensure(took < Duration::from_secs(20), || {
        format!("exec with a 2s timeout took {took:?}")
    })?;
    // The container is still usable afterwards.
    let out = ctx.cri.sh(&c, "echo after-timeout").await?;
    ensure(out == "after-timeout\n", || {
        format!("exec after timeout: {out:?}")
    })
}

async fn exec_url(ctx: &Ctx, c: &str, cmd: &[&str], tty: bool) -> Result<String> {
    Ok(ctx
        .cri
        .rt
        .clone()
        .exec(ExecRequest {
            container_id: c.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: true,
            stdout: true,
            stderr: !tty,
        })
        .await
        .context("exec request")?
        .into_inner()
        .url)
}

pub async fn exec_stream(ctx: &Ctx) -> Result<()> {
    let (_pod, c, _) = ctx.pod_with_sleeper().await?;
    let script = "read line; echo out:$line; echo err:$line >&2; exit 3";
    let url = exec_url(ctx, &c, &["sh", "-c", script], false).await?;
    let mut s = Session::connect(&url).await?;
    s.stdin(b"hello\n").await?;
    s.read_to_end(STREAM_TIMEOUT).await?;
    ensure(s.stdout_str() == "out:hello\n", || {
        format!("stdout {:?}", s.stdout_str())
    })?;
    ensure(s.stderr_str() == "err:hello\n", || {
        format!("stderr {:?}", s.stderr_str())
    })?;
    let code = s.exit_code()?;
    ensure(code == 3, || format!("exit code {code}, want 3"))
}

/// Resizes the terminal and waits until `stty size` in the shell reports it.
/// A resize is asynchronous to the shell (and one sent before the process has
/// its pty may be applied late), so it is re-sent with each question.
async fn expect_size(s: &mut Session, width: u16, height: u16) -> Result<()> {
    let want = format!("{height} {width}");
    // Only answers to these questions count, not an earlier size still in the buffer.
    s.stdout.clear();
    for _ in 0..20 {
        s.resize(width, height).await?;
        s.stdin(b"stty size\n").await?;
        if s.read_until(&want, Duration::from_millis(500))
            .await
            .is_ok()
        {
            return Ok(());
        }
    }
    anyhow::bail!(
        "resize to {width}x{height} not seen by stty: {:?}",
        s.stdout_str()
    )
}

pub async fn exec_stream_tty(ctx: &Ctx) -> Result<()> {
    let (_pod, c, _) = ctx.pod_with_sleeper().await?;
    let url = exec_url(ctx, &c, &["sh"], true).await?;
    let mut s = Session::connect(&url).await?;
    // The pty echoes what we type, then the shell runs it.
    s.stdin(b"echo typed-$((6*7))\n").await?;
    s.read_until("echo typed-$((6*7))", STREAM_TIMEOUT).await?;
    s.read_until("typed-42", STREAM_TIMEOUT).await?;
    expect_size(&mut s, 123, 45).await?;
    expect_size(&mut s, 80, 24).await?;
    s.stdin(b"exit 5\n").await?;
    s.read_to_end(STREAM_TIMEOUT).await?;
    let code = s.exit_code()?;
    ensure(code == 5, || format!("exit code {code}, want 5"))
}

/// Runs `cc` (its stdin open, a terminal when `cc.tty`) in a new pod and attaches to it.
async fn run_attached(ctx: &Ctx, cc: &ContainerConfig) -> Result<Session> {
    let (pod, cfg) = ctx.pod().await?;
    let c = ctx.cri.run_container(&pod, cc, &cfg).await?;
    let url = attach_url(ctx, &c, cc.tty).await?;
    Session::connect(&url).await
}

async fn attach_url(ctx: &Ctx, c: &str, tty: bool) -> Result<String> {
    Ok(ctx
        .cri
        .rt
        .clone()
        .attach(AttachRequest {
            container_id: c.to_string(),
            stdin: true,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .context("attach request")?
        .into_inner()
        .url)
}

pub async fn attach(ctx: &Ctx) -> Result<()> {
    let mut cc = ctx.container(
        "reader",
        &[
            "sh",
            "-c",
            "while read line; do echo out:$line; echo err:$line >&2; done",
        ],
    );
    cc.stdin = true;
    let mut s = run_attached(ctx, &cc).await?;
    s.stdin(b"ping\n").await?;
    s.read_until("out:ping", STREAM_TIMEOUT).await?;
    s.stdin(b"pong\n").await?;
    s.read_until("out:pong", STREAM_TIMEOUT).await?;
    s.read_until_stderr("err:pong", STREAM_TIMEOUT).await?;
    ensure(s.stderr_str() == "err:ping\nerr:pong\n", || {
        format!("stderr {:?}", s.stderr_str())
    })?;
    s.close().await;
    Ok(())
}

pub async fn attach_tty(ctx: &Ctx) -> Result<()> {
    let mut cc = ctx.container("shell", &["sh"]);
    cc.stdin = true;
    cc.tty = true;
    let mut s = run_attached(ctx, &cc).await?;
    s.stdin(b"echo att-$((2+3))\n").await?;
    s.read_until("att-5", STREAM_TIMEOUT).await?;
    expect_size(&mut s, 100, 30).await?;
    s.close().await;
    Ok(())
}
