//! Dev-only helpers for slotbox tests.
//!
//! Tests that need a real part (bubblewrap, Docker, sshd) probe for it first. On a developer's
//! machine a missing part makes the test print why it skips and return; in CI (`CI=true`, or
//! `SLOTBOX_REQUIRE_REAL_PARTS=1`) it makes the test fail, so CI can never go green by skipping.

#![allow(clippy::print_stderr)]

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
