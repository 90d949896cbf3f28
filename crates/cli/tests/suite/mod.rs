//! Helpers to run the built `slotbox` binary.

mod exec;
mod rollout;
mod serve;
mod up;

use std::io::Write;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;

/// `slotbox` with `args`, in `dir`, with a scrubbed environment plus `extra_env`.
pub(crate) fn slotbox(dir: &std::path::Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotbox"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("SLOTBOX_BACKEND")
        .env_remove("SLOTBOX_BWRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    drop(child.stdin.take().map(|mut stdin| stdin.flush()));
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Backends to run CLI checks on: local always, bwrap when available (required in CI).
pub(crate) fn backends() -> Vec<&'static str> {
    let mut backends = vec!["local"];
    let scratch = tempfile::tempdir().unwrap();
    let probe = slotbox(
        scratch.path(),
        &["exec", "--backend", "bwrap", "--", "true"],
        &[],
    );
    let available = if probe.status.success() {
        Ok(())
    } else {
        Err(stderr(&probe))
    };
    if slotbox_test_support::require("bubblewrap", available) {
        backends.push("bwrap");
    }
    backends
}

pub(crate) use slotbox_test_support::process_alive;
