//! Time limits and cancellation as types.
//!
//! Raw numbers of seconds exist only at the wire and CLI edges; below them a limit is a `Timeout`,
//! a `StallTimeout` or an `Interrupt`, so a "0 means no limit" or "seconds vs milliseconds" mix-up
//! cannot happen here.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The wall-clock limit of one command. On expiry the whole process group is killed and the result
/// is exit code 124 with `[Command timed out after Ns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// hermes' local default; callers at the edge pick their own.
    pub const DEFAULT: Timeout = Timeout(Duration::from_secs(60));

    /// A limit of `duration`.
    pub fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// The limit as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

/// Seconds the way hermes prints them: `180` for whole seconds, `1.5` otherwise.
impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_seconds(f, self.0)
    }
}

/// A limit on silence: when the command prints nothing for this long it is killed like a timeout,
/// with `[Command produced no output for Ns]`. Catches commands blocked on a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallTimeout(Duration);

impl StallTimeout {
    /// A no-output limit of `duration`.
    pub fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// The limit as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for StallTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_seconds(f, self.0)
    }
}

fn write_seconds(f: &mut fmt::Formatter<'_>, duration: Duration) -> fmt::Result {
    if duration.subsec_nanos() == 0 {
        write!(f, "{}", duration.as_secs())
    } else {
        // Up to millisecond precision, without trailing zeros.
        let text = format!("{:.3}", duration.as_secs_f64());
        write!(f, "{}", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A handle that interrupts a running command: the command's process group is killed and the
/// result is exit code 130 with `[Command interrupted]`. Cloning shares the handle.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(CancellationToken);

impl Interrupt {
    /// A fresh, untriggered handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Interrupts every command watching this handle (now or later).
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether `trigger` was called.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub(crate) async fn triggered(&self) {
        self.0.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_like_hermes() {
        assert_eq!(Timeout::new(Duration::from_secs(180)).to_string(), "180");
        assert_eq!(Timeout::new(Duration::from_millis(1500)).to_string(), "1.5");
        assert_eq!(Timeout::new(Duration::from_millis(250)).to_string(), "0.25");
        assert_eq!(StallTimeout::new(Duration::from_secs(2)).to_string(), "2");
    }
}
