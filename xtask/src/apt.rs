//! Installs the Debian packages the harness and the workspace need, once, skipping those present.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Everything the tests use from Debian: containerd and runc, CNI plugins, the
/// dynamic busybox for the test image, umoci for packing images, and the
/// toolchain pieces other crates build with (protoc, clang/llvm, libbpf): what a fresh
/// machine of CI's kind lacks, then what it already has.
pub const PACKAGES: &[&str] = &joined::<
    { FRESH_LACKS.len() },
    { FRESH_HAS.len() },
    { FRESH_LACKS.len() + FRESH_HAS.len() },
>(FRESH_LACKS, FRESH_HAS);

/// The packages of [`PACKAGES`] a fresh machine of CI's kind (Debian 12 with the Rust
/// toolchain, gcc, make, python3, git, curl, ...) does not have: `cargo xtask fresh-machine`
/// uninstalls these in its view.
pub const FRESH_LACKS: [&str; 14] = [
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox",
    "umoci",
    "skopeo",
    "protobuf-compiler",
    "clang",
    "libbpf-dev",
    "libelf-dev",
    "bpftool",
    // the kernel matrix: guests, their root disk, kernels' modules
    "qemu-system-x86",
    "debootstrap",
    "kmod",
];

/// The packages of [`PACKAGES`] a fresh machine of CI's kind already has.
const FRESH_HAS: [&str; 14] = [
    "llvm",
    "zlib1g-dev",
    "pkg-config",
    "iproute2",
    "jq",
    // fetching other containerd releases (--containerd)
    "curl",
    "libc6-dev",
    // the monitor's vendored libbpf and BPF objects
    "make",
    "gcc",
    // palisade-init's and the sandbox's tests (scoping probes, capability setup)
    "python3",
    "util-linux",
    // the kernel matrix: root disk, kernels' payloads
    "e2fsprogs",
    "xz-utils",
    "zstd",
];

/// `a` then `b`, at compile time (`N` must be `A + B`).
const fn joined<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "joined: N must be A + B");
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    out
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

/// Installs the missing packages with apt-get (one `apt-get update` first).
pub fn ensure_packages() -> Result<()> {
    ensure(PACKAGES)
}

/// Installs those of `packages` that are missing.
pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("run apt-get {}", args.join(" ")))?;
        if !st.success() {
            bail!("apt-get {} failed: {st}", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}
