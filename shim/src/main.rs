//! `containerd-shim-palisade-v2`: containerd's entry point into palisade.

use containerd_shim::Config;
use palisade_shim::shim::PalisadeShim;

/// The runtime name containerd knows palisade by.
const RUNTIME_ID: &str = "io.containerd.palisade.v2";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    palisade_shim::sys::single_malloc_arena();
    let config = Config {
        no_setup_logger: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<PalisadeShim>(RUNTIME_ID, Some(config)).await;
}
