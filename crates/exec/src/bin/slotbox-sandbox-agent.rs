//! The sandbox agent as a binary of its own, so the execution core's tests (and embedders without
//! the `slotbox` binary) can run long-lived sandboxes. `slotbox __sandbox-agent` is the same code.

#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    match slotbox_exec::agent::run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("slotbox-sandbox-agent: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
