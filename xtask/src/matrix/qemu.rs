//! One guest boot under qemu: the kernel's `vmlinux` through its PVH entry, the cached root
//! disk as a snapshot, the run share and the build's target directory over 9p, the serial
//! console into a file; qemu runs in its own process group under `timeout`, known to the
//! harness's step list, so that a deadline or a signal stops it by its group id.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::initramfs::RUN_TAG;
use crate::procs::Children;

/// The tag of the read-only share of the build's target directory.
pub const TARGET_TAG: &str = "target";

/// What qemu runs on: KVM when the CPU offers hardware virtualisation (vmx, svm) and
/// /dev/kvm exists, else TCG emulation (as on machines whose /dev/kvm cannot run a stock
/// kernel), multi-threaded or, for the bench, counting instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    /// TCG with instruction counting (`-icount shift=0`): the guest's clock advances one
    /// nanosecond per emulated instruction, so the times measured in the guest count
    /// instructions and do not depend on the host's load. `sleep=off` warps the clock to the
    /// next timer when the vCPU idles (a guest sleep costs no host time), which qemu accepts
    /// only with `align=off`; icount runs single-threaded TCG only.
    Counted,
}

impl Accel {
    pub fn detect() -> Self {
        let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hw = cpu
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if hw && Path::new("/dev/kvm").exists() {
            Self::Kvm
        } else {
            Self::Tcg
        }
    }

    /// What the bench runs on: KVM stays KVM (hardware times), emulation counts instructions,
    /// since under plain TCG the figures follow the host's load.
    pub fn counted(self) -> Self {
        match self {
            Self::Kvm => Self::Kvm,
            Self::Tcg | Self::Counted => Self::Counted,
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
            Self::Counted => &[
                "-accel",
                "tcg,thread=single",
                "-icount",
                "shift=0,align=off,sleep=off",
                "-cpu",
                "max",
            ],
        }
    }

    /// vCPUs of a guest. One under emulation: the kernel patches its own code live (static
    /// keys flip as tracepoint and BPF programs attach and detach), and under multi-threaded
    /// TCG another vCPU has hit the patch's transient int3 and oopsed (6.12, in
    /// `syscall_exit_to_user_mode_prepare`, during the exec tests); with one vCPU there is no
    /// other CPU to race the patch.
    pub fn cpus(self) -> &'static str {
        match self {
            Self::Kvm => "2",
            Self::Tcg | Self::Counted => "1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG emulation",
            Self::Counted => "TCG emulation, instruction counting",
        }
    }
}

/// One boot's inputs.
pub struct Boot<'a> {
    pub vmlinux: &'a Path,
    pub initramfs: &'a Path,
    pub root: &'a Path,
    /// Extra kernel command line (e.g. `lsm=...`).
    pub cmdline: &'a str,
    /// Shared read-write as `run`: the script in, the results out.
    pub run_dir: &'a Path,
    /// The workspace's target directory (the test binaries, the release shim, the suite and
    /// xtask), shared read-only as `target` and mounted at the same path in the guest.
    pub target: &'a Path,
    pub console: PathBuf,
    pub timeout: Duration,
    pub accel: Accel,
}

/// The qemu command line of a boot.
fn command(b: &Boot<'_>) -> Command {
    let secs = b.timeout.as_secs().to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", &secs, "qemu-system-x86_64"]);
    cmd.args(b.accel.args());
    cmd.args([
        "-machine",
        "pc",
        "-smp",
        b.accel.cpus(),
        "-m",
        "2048",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    cmd.arg("-serial")
        .arg(format!("file:{}", b.console.display()));
    cmd.arg("-kernel").arg(b.vmlinux);
    cmd.arg("-initrd").arg(b.initramfs);
    cmd.arg("-append")
        .arg(format!("console=ttyS0 panic=-1 loglevel=4 {}", b.cmdline));
    cmd.arg("-drive").arg(format!(
        "file={},format=raw,if=virtio,snapshot=on",
        b.root.display()
    ));
    for (tag, path, ro) in [(RUN_TAG, b.run_dir, false), (TARGET_TAG, b.target, true)] {
        cmd.arg("-fsdev").arg(format!(
            "local,id={tag},path={},security_model=none{}",
            path.display(),
            if ro { ",readonly=on" } else { "" }
        ));
        cmd.arg("-device")
            .arg(format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"));
    }
    cmd
}

/// Boots the guest and waits for it to power off (or for the deadline); returns whether qemu
/// ended by itself (the timeout's status otherwise).
pub fn run(b: &Boot<'_>, children: &Children) -> Result<bool> {
    let mut cmd = command(b);
    let st = children
        .status(&mut cmd)
        .context("run qemu-system-x86_64")?;
    // timeout(1) exits 124 when it had to stop qemu.
    Ok(st.code() != Some(124) && st.code() != Some(137))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_boots_the_elf_with_a_snapshot_root_and_two_shares() {
        let b = Boot {
            vmlinux: Path::new("/k/vmlinux"),
            initramfs: Path::new("/k/initramfs.cpio"),
            root: Path::new("/c/root.ext4"),
            cmdline: "lsm=bpf",
            run_dir: Path::new("/r"),
            target: Path::new("/t"),
            console: PathBuf::from("/r/console.log"),
            timeout: Duration::from_secs(600),
            accel: Accel::Tcg,
        };
        let args: Vec<String> = command(&b)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.starts_with(
            "--kill-after=10 600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max"
        ));
        assert!(line.contains("-smp 1 "));
        assert!(line.contains("-kernel /k/vmlinux"));
        assert!(line.contains("file=/c/root.ext4,format=raw,if=virtio,snapshot=on"));
        assert!(line.contains("path=/t,security_model=none,readonly=on"));
        assert!(line.contains("mount_tag=run"));
        assert!(line.ends_with("virtio-9p-pci,fsdev=target,mount_tag=target"));
        assert!(args.iter().any(|a| a.ends_with("lsm=bpf")));
    }

    #[test]
    fn the_counted_mode_is_single_threaded_tcg_counting_instructions() {
        let b = Boot {
            vmlinux: Path::new("/k/vmlinux"),
            initramfs: Path::new("/k/initramfs.cpio"),
            root: Path::new("/c/root.ext4"),
            cmdline: "",
            run_dir: Path::new("/r"),
            target: Path::new("/t"),
            console: PathBuf::from("/r/console.log"),
            timeout: Duration::from_secs(3600),
            accel: Accel::Counted,
        };
        let line = command(&b)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.starts_with(
                "--kill-after=10 3600 qemu-system-x86_64 -accel tcg,thread=single \
             -icount shift=0,align=off,sleep=off -cpu max -machine pc -smp 1 "
            ),
            "{line}"
        );
        assert_eq!(Accel::Tcg.counted(), Accel::Counted);
        assert_eq!(Accel::Kvm.counted(), Accel::Kvm);
    }
}
