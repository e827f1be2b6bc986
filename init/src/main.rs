//! palisade-init: apply the plan, then become the container's entrypoint.

use std::io::Write;

fn main() {
    let Err(err) = palisade_init::run(std::env::args_os().skip(1));
    // One line, whatever a path in the message contains, so the shim can log it as is.
    let line = format!("palisade-init: {err}").replace('\n', "\\n");
    let _ = writeln!(std::io::stderr(), "{line}");
    std::process::exit(err.exit_code());
}
