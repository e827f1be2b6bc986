//! Container logs in the CRI format at the log path, across a container restart.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cri::{container_config, log_rel_path};
use crate::suite::{ensure, Ctx};

/// One parsed CRI log line: `<RFC3339Nano> <stream> <F|P> <content>`.
#[derive(Debug, PartialEq)]
pub struct LogLine {
    pub stream: String,
    pub tag: String,
    pub content: String,
}

pub fn parse_line(line: &str) -> Result<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next().unwrap_or("");
    let stream = parts.next().context("no stream field")?;
    let tag = parts.next().context("no tag field")?;
    let content = parts.next().unwrap_or("");
    if !is_rfc3339(ts) {
        bail!("bad timestamp {ts:?} in {line:?}");
    }
    if stream != "stdout" && stream != "stderr" {
        bail!("bad stream {stream:?} in {line:?}");
    }
    if tag != "F" && tag != "P" {
        bail!("bad tag {tag:?} in {line:?}");
    }
    Ok(LogLine {
        stream: stream.to_string(),
        tag: tag.to_string(),
        content: content.to_string(),
    })
}

/// `2024-01-02T03:04:05.123456789Z` or with a numeric offset.
fn is_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4)
            && digits(5..7)
            && digits(8..10)
            && digits(11..13)
            && digits(14..16)
            && digits(17..19))
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')))
}

/// Reads and parses a log file, waiting up to `timeout` for `lines` lines to be there.
async fn read_log(path: &Path, lines: usize, timeout: Duration) -> Result<Vec<LogLine>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let n = text.lines().count();
        if n >= lines || tokio::time::Instant::now() > deadline {
            if n < lines {
                bail!(
                    "log {} has {n} lines, want {lines}: {text:?}",
                    path.display()
                );
            }
            return text.lines().map(parse_line).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a container to completion and returns its stdout (from the log) and exit code.
pub async fn output_of(
    ctx: &Ctx,
    pod: &str,
    cfg: &k8s_cri::v1::PodSandboxConfig,
    cc: &k8s_cri::v1::ContainerConfig,
) -> Result<(String, i32)> {
    let id = ctx.cri.run_container(pod, cc, cfg).await?;
    let st = ctx.cri.wait_exited(&id, Duration::from_secs(30)).await?;
    // The log is complete once the exit is reported; give the writer a moment anyway.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = std::fs::read_to_string(&st.log_path)
        .with_context(|| format!("read log {}", st.log_path))?;
    let mut out = String::new();
    for line in text.lines() {
        let l = parse_line(line)?;
        if l.stream == "stdout" {
            out += &l.content;
            if l.tag == "F" {
                out.push('\n');
            }
        }
    }
    Ok((out, st.exit_code))
}

pub async fn container_logs(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let log_dir = Path::new(&cfg.log_directory);
    // 20000 bytes exceed containerd's 16 KiB line limit: one partial then one full entry.
    let script =
        "echo line-one; echo to-stderr >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; echo last";
    let c0 = container_config("logger", 0, ctx.image(), &["sh", "-c", script]);
    let id0 = ctx.cri.run_container(&pod, &c0, &cfg).await?;
    let st = ctx.cri.wait_exited(&id0, Duration::from_secs(20)).await?;
    ensure(
        st.log_path
            == log_dir
                .join(log_rel_path("logger", 0))
                .display()
                .to_string(),
        || format!("status log path {:?}", st.log_path),
    )?;
    let lines = read_log(Path::new(&st.log_path), 5, Duration::from_secs(10)).await?;
    ensure(lines.len() == 5, || {
        format!("{} log lines, want 5", lines.len())
    })?;
    let want_first = LogLine {
        stream: "stdout".into(),
        tag: "F".into(),
        content: "line-one".into(),
    };
    // stdout and stderr are separate pipes: only the order within a stream is defined.
    let first_out = lines.iter().find(|l| l.stream == "stdout");
    ensure(first_out == Some(&want_first), || {
        format!("first stdout line {first_out:?}")
    })?;
    ensure(
        lines
            .iter()
            .any(|l| l.stream == "stderr" && l.tag == "F" && l.content == "to-stderr"),
        || "no stderr line".into(),
    )?;
    let stdout: Vec<&LogLine> = lines.iter().filter(|l| l.stream == "stdout").collect();
    ensure(stdout.len() == 4, || {
        format!("{} stdout lines", stdout.len())
    })?;
    ensure(stdout[1].tag == "P" && stdout[2].tag == "F", || {
        format!("long line tags {} {}", stdout[1].tag, stdout[2].tag)
    })?;
    let joined = stdout[1].content.len() + stdout[2].content.len();
    ensure(joined == 20000, || {
        format!("long line rejoined to {joined} bytes")
    })?;
    ensure(stdout[3].content == "last", || {
        format!("last line {:?}", stdout[3])
    })?;

    // A restart (attempt 1) logs to a new file and leaves the first one as it was.
    let c1 = container_config(
        "logger",
        1,
        ctx.image(),
        &["sh", "-c", "echo second-attempt"],
    );
    let id1 = ctx.cri.run_container(&pod, &c1, &cfg).await?;
    let st1 = ctx.cri.wait_exited(&id1, Duration::from_secs(20)).await?;
    ensure(st1.log_path.ends_with("logger/1.log"), || {
        format!("attempt 1 log path {:?}", st1.log_path)
    })?;
    let lines1 = read_log(Path::new(&st1.log_path), 1, Duration::from_secs(10)).await?;
    ensure(
        lines1.len() == 1 && lines1[0].content == "second-attempt",
        || format!("attempt 1 log {lines1:?}"),
    )?;
    let again = read_log(Path::new(&st.log_path), 5, Duration::from_secs(1)).await?;
    ensure(again.len() == 5, || {
        format!("attempt 0 log changed: {} lines", again.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_lines() {
        let l = parse_line("2024-05-06T07:08:09.123456789Z stdout F hello world").unwrap();
        assert_eq!(l.content, "hello world");
        assert_eq!(l.tag, "F");
        assert!(parse_line("2024-05-06T07:08:09+02:00 stderr P x").is_ok());
        assert!(parse_line("2024-05-06T07:08:09.1Z stdout F ")
            .unwrap()
            .content
            .is_empty());
        assert!(parse_line("yesterday stdout F x").is_err());
        assert!(parse_line("2024-05-06T07:08:09Z stdin F x").is_err());
        assert!(parse_line("2024-05-06T07:08:09Z stdout X x").is_err());
    }
}
