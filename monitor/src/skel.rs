//! The skeletons libbpf-cargo generates from `src/bpf/*.bpf.c` (build.rs), included here and
//! nowhere else: `monitor` for the node's programs and the record layouts they share with user
//! space (`monitor::types`), `floor` for the empty hook programs, `probe` for the BPF-LSM probe.

pub(crate) mod monitor {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, warnings)]
    include!(concat!(env!("OUT_DIR"), "/monitor.skel.rs"));
}

pub(crate) mod floor {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, warnings)]
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

pub(crate) mod probe {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, warnings)]
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}
