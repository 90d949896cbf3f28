//! Plain data shared over slotbox's wire and command line.
//!
//! Architecture invariant: this crate is a leaf. It holds serde types and constants only: no tokio,
//! no process code, no HTTP. Every other slotbox crate may depend on it; it depends on none of them.
//! Field names are a contract with clients: add fields freely, rename none.

use serde::Deserialize;
use serde::Serialize;

pub mod v1;

/// Exit code reported when a command hit its time limit (shell convention, as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code reported when the tracked working directory could not be entered at all.
pub const EXIT_CANNOT_ENTER_CWD: i32 = 126;
/// Exit code reported when a command was interrupted (128 + SIGINT, as a shell reports Ctrl-C).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Default cap on the characters of output kept for one command (hermes' `tool_output.max_bytes`).
pub const DEFAULT_MAX_OUTPUT_CHARS: usize = 50_000;

/// The result of one command, as `slotbox exec --json` prints it and the v1 API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecResult {
    /// The shell's exit status; 124 on timeout, 130 on interrupt, 128+N when killed by signal N.
    pub exit_code: i32,
    /// stdout and stderr merged in arrival order, decoded as UTF-8 (invalid bytes become U+FFFD),
    /// head/tail-truncated to the cap, with the timeout or interrupt notice appended.
    pub output: String,
    /// stderr, when it was captured apart (then `output` is stdout alone); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The command was stopped because it ran past its time limit (or its no-output limit).
    pub timed_out: bool,
    /// The command was stopped by an interrupt (cancellation) request.
    #[serde(default)]
    pub interrupted: bool,
    /// Part of the output was dropped to fit the cap; `output` says how many characters.
    pub truncated: bool,
    /// The session's working directory after the command, as seen inside the backend.
    pub cwd: String,
    /// Wall time of the call, from spawn to result, in milliseconds.
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn exec_result_field_names_are_the_documented_contract() {
        let result = ExecResult {
            exit_code: 0,
            output: "hi\n".to_owned(),
            stderr: None,
            timed_out: false,
            interrupted: false,
            truncated: false,
            cwd: "/workspace".to_owned(),
            duration_ms: 3,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "exit_code": 0,
                "output": "hi\n",
                "timed_out": false,
                "interrupted": false,
                "truncated": false,
                "cwd": "/workspace",
                "duration_ms": 3
            })
        );
        let back: ExecResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, result);
    }
}
