//! The hole in issue 17's service (`profile_enforce`): its CGI runs the command of a query
//! `run=BASE64` in a shell and answers `run N`, its exit status, as a command injection would
//! let an attacker without `kubectl exec` do.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};

use super::eventlog::get;

/// Runs shell command `cmd` through the service's hole at `addr`: its exit status.
pub(super) async fn through_service(addr: SocketAddr, cmd: &str) -> Result<i32> {
    let encoded = base64(cmd.as_bytes());
    let r = get(addr, &format!("/cgi-bin/svc?run={encoded}")).await?;
    let code = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|c| c.trim().parse().ok());
    code.with_context(|| {
        format!(
            "the service's hole did not answer for {cmd:?}: status {}, body {:.200?}",
            r.status, r.body
        )
    })
}

/// Standard base64 with padding (what busybox `base64 -d` reads).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_as_busybox_reads_it() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"e"), "ZQ==");
        assert_eq!(super::base64(b"ec"), "ZWM=");
        assert_eq!(super::base64(b"echo x"), "ZWNobyB4");
        assert_eq!(
            super::base64(b"echo x > /etc/palisade-attack"),
            "ZWNobyB4ID4gL2V0Yy9wYWxpc2FkZS1hdHRhY2s="
        );
    }
}
