//! `containerd-shim-palisade-v2`: containerd's entry point into palisade.

use containerd_shim::Config;
use palisade_shim::shim::PalisadeShim;

/// The runtime name containerd knows palisade by.
const RUNTIME_ID: &str = "io.containerd.palisade.v2";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // One malloc arena for all of the shim's few threads: per-thread arenas cost a pod
    // megabytes of resident memory for no gain at this concurrency.
    // SAFETY: mallopt only tunes the allocator; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let config = Config {
        no_setup_logger: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<PalisadeShim>(RUNTIME_ID, Some(config)).await;
}
