//! Compiles the BPF programs in src/bpf and generates their Rust skeletons into OUT_DIR.

use std::env;
use std::path::PathBuf;

use anyhow::{Context, Result};
use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["monitor", "probe", "floor"];

fn main() -> Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let bpf_dir = PathBuf::from("src/bpf");
    for name in PROGRAMS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .obj(out.join(format!("{name}.bpf.o")))
            // gnu11: vmlinux.h defines bool, true and false, which C23 makes keywords. No
            // -Werror: a newer clang's new warnings must not break the build.
            .clang_args(["-I", "src/bpf", "-std=gnu11", "-Wall"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .with_context(|| format!("building {}", src.display()))?;
        println!("cargo:rerun-if-changed={}", src.display());
    }
    // The pin directory is named after the object (shims built from different programs never
    // share maps); hashed here so that a shim joining the pins never reads the object.
    let obj = std::fs::read(out.join("monitor.bpf.o")).context("reading monitor.bpf.o")?;
    // FNV-1a: stable across builds and platforms, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in obj {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    println!("cargo:rustc-env=PALISADE_BPF_HASH={h:016x}");
    println!("cargo:rerun-if-changed=src/bpf/events.h");
    println!("cargo:rerun-if-changed=src/bpf/files.h");
    println!("cargo:rerun-if-changed=src/bpf/creds.h");
    println!("cargo:rerun-if-changed=src/bpf/lsm_files.h");
    println!("cargo:rerun-if-changed=src/bpf/lsm_file_ops.h");
    println!("cargo:rerun-if-changed=src/bpf/lsm_globs.h");
    println!("cargo:rerun-if-changed=src/bpf/learn.h");
    println!("cargo:rerun-if-changed=src/bpf/egress.h");
    println!("cargo:rerun-if-changed=src/bpf/syscalls.h");
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
    Ok(())
}
