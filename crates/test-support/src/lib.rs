//! Dev-only helpers for slotbox tests.
//!
//! Tests that need a real part (bubblewrap, Docker, sshd) probe for it first. On a developer's
//! machine a missing part makes the test print why it skips and return; in CI (`CI=true`, or
//! `SLOTBOX_REQUIRE_REAL_PARTS=1`) it makes the test fail, so CI can never go green by skipping.

#![allow(clippy::print_stderr)]

mod sshd;

pub use sshd::TestSshd;

/// Whether a missing real part must fail the test rather than skip it.
pub fn real_parts_required() -> bool {
    let flag = |name: &str| {
        std::env::var(name)
            .map(|value| matches!(value.trim(), "1" | "true" | "yes"))
            .unwrap_or(false)
    };
    flag("CI") || flag("SLOTBOX_REQUIRE_REAL_PARTS")
}

/// Returns `true` when `part` is available (`probe` is `Ok`). Otherwise skips the test with a
/// printed reason (returns `false`), or panics when real parts are required.
#[track_caller]
pub fn require(part: &str, probe: Result<(), String>) -> bool {
    match probe {
        Ok(()) => true,
        Err(reason) if real_parts_required() => {
            panic!("{part} is required in CI but unavailable: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping: {part} unavailable: {reason}");
            false
        }
    }
}

/// A binary of another workspace package, from the target directory this test binary runs from
/// (`target/<profile>/NAME`); `Err` says how to build it. Cargo's `CARGO_BIN_EXE_*` reaches only
/// the test's own package.
pub fn workspace_binary(name: &str) -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    let candidate = profile_dir.join(name);
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "{} not built (cargo build --workspace builds it)",
            candidate.display()
        ))
    }
}

/// Whether any process on the host has `needle` in its command line (`/proc/*/cmdline`), to check
/// that a test's process (tagged with `exec -a TAG`) was or was not killed.
pub fn process_alive(needle: &str) -> bool {
    count_processes(needle) > 0
}

/// How many processes on the host have `needle` in their command line.
pub fn count_processes(needle: &str) -> usize {
    command_lines()
        .filter(|cmdline| {
            String::from_utf8_lossy(cmdline)
                .replace('\0', " ")
                .contains(needle)
        })
        .count()
}

/// How many processes on the host are named exactly `name` (their argv[0], as `exec -a` sets
/// it), unlike `count_processes` not counting a shell whose arguments merely mention it.
pub fn count_named(name: &str) -> usize {
    command_lines()
        .filter(|cmdline| cmdline.split(|&byte| byte == 0).next() == Some(name.as_bytes()))
        .count()
}

/// Every readable `/proc/*/cmdline` (NUL-separated arguments).
fn command_lines() -> impl Iterator<Item = Vec<u8>> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
}
