//! The rollout crate's one error type.
//!
//! Model-side variants tell the loop which termination a trajectory gets (`api_error`,
//! `context`, `timeout`); slot-side variants end a rollout as `tool_fatal`.

use std::time::Duration;

/// Why something in a rollout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of the tasks file is not a task.
    #[error("tasks file line {line}: {reason}")]
    InvalidTask {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The model server answered an error status that is not worth retrying (or retries ran out).
    #[error("model server answered {status} after {attempts} attempt(s): {body}")]
    ModelStatus {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
        /// Requests made.
        attempts: u32,
    },
    /// The model server refused the prompt as too long for its context window.
    #[error("model server refused the prompt as too long: {body}")]
    ModelContext {
        /// Start of the body.
        body: String,
    },
    /// The model server could not be reached (after retries).
    #[error("model server unreachable after {attempts} attempt(s): {detail}")]
    ModelTransport {
        /// Why the last attempt failed.
        detail: String,
        /// Requests made.
        attempts: u32,
    },
    /// The model server answered something that is not a chat completion.
    #[error("model server answered something that is not a chat completion: {detail}")]
    ModelResponse {
        /// What was wrong.
        detail: String,
    },
    /// The rollout's deadline passed.
    #[error("the rollout's deadline of {0:?} passed")]
    Deadline(Duration),
    /// The run was cancelled (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
    /// A call to the slot (sandbox server or pool) failed.
    #[error("slot: {0}")]
    Slot(#[from] slotbox_client::Error),
    /// A setup command of the task failed.
    #[error("setup command {index} ({command:?}) failed: {reason}")]
    Setup {
        /// 1-based index in the task's `setup` list.
        index: usize,
        /// The command.
        command: String,
        /// Exit code and output tail, or the slot error.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
