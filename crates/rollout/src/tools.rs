//! The tools the model can call, bound to one leased slot: `terminal`, `read_file`,
//! `write_file`.
//!
//! Results are what hermes-agent's tools return, so prompts and reward code written for it keep
//! working: terminal answers `{"output": …, "exit_code": N, "error": null}` in Python's JSON
//! spacing, output ANSI-stripped and capped at 50 000 characters (40 % head + notice + 60 % tail,
//! done by the sandbox server with hermes' notice). A failure of the slot itself (lease lost,
//! server gone) is *fatal*: the loop answers the call and ends the rollout as `tool_fatal`,
//! instead of letting the model flail against a dead sandbox.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Map;
use serde_json::Value;
use serde_json::json;
use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_protocol::v1::ExecBody;
use slotbox_toolcall::python_json;

use crate::budget::Deadline;

/// A JSON object in Python's `json.dumps` text with its keys in the order given (serde_json's
/// map sorts keys; the reference's results read `{"output": …, "exit_code": …, "error": …}`).
pub fn python_object(pairs: &[(&str, Value)], ensure_ascii: bool) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{}: {}",
                python_json(&Value::String((*key).to_owned()), ensure_ascii),
                python_json(value, ensure_ascii)
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The terminal tool's output cap (hermes' 50 000 characters).
pub const TERMINAL_MAX_OUTPUT_CHARS: u64 = 50_000;
/// Lines `read_file` returns at most per call.
const READ_MAX_LINES: u64 = 2000;
/// Lines `read_file` returns when the model gives no `limit`.
const READ_DEFAULT_LINES: u64 = 500;
/// Characters kept of one line by `read_file`.
const READ_MAX_LINE_CHARS: usize = 2000;
/// Where the slot's workspace is, as the model sees it inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// How a call went, for the metrics and the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran (a non-zero exit code is still a run, as in the reference).
    Ok,
    /// It failed; the model is told and may retry.
    Error,
    /// The slot is gone: answer this call, then end the rollout.
    Fatal(String),
}

/// A tool's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The tool message's content.
    pub content: String,
    /// How it went.
    pub outcome: Outcome,
}

impl Answer {
    /// `{"error": message}` (Python spacing, ASCII-escaped like the reference's own errors).
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            content: python_json(&json!({ "error": message.into() }), true),
            outcome: Outcome::Error,
        }
    }
}

/// Something that runs the model's tool calls.
pub trait Toolbox: Send + Sync {
    /// The tool names the model may call.
    fn names(&self) -> &[&'static str];
    /// The OpenAI `tools` array describing them.
    fn schemas(&self) -> &Value;
    /// Runs one call with validated arguments, within `deadline`.
    fn call(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Deadline,
    ) -> impl Future<Output = Answer> + Send;
}

/// The tool names, sorted (the unknown-tool message lists them in this order).
pub const TOOL_NAMES: [&str; 3] = ["read_file", "terminal", "write_file"];

/// The OpenAI `tools` array of the three tools.
pub fn schemas() -> &'static Value {
    static SCHEMAS: OnceLock<Value> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        json!([
            {"type": "function", "function": {
                "name": "terminal",
                "description": "Run a bash command in your workspace (/workspace) and get its output and exit code. The shell session persists between calls: the working directory, exported variables and functions carry over. Interactive programs are not supported; stdin is empty.",
                "parameters": {"type": "object", "properties": {
                    "command": {"type": "string", "description": "The command to run."},
                    "timeout": {"type": "integer", "minimum": 1, "description": "Seconds before the command is killed (default: the run's command timeout)."}
                }, "required": ["command"]}}},
            {"type": "function", "function": {
                "name": "read_file",
                "description": "Read a text file of the workspace with line numbers.",
                "parameters": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "Path relative to /workspace, or absolute under /workspace."},
                    "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based, default 1)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 2000, "description": "Lines to read (default 500)."}
                }, "required": ["path"]}}},
            {"type": "function", "function": {
                "name": "write_file",
                "description": "Write a file of the workspace (replacing it; parent directories are created).",
                "parameters": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "Path relative to /workspace, or absolute under /workspace."},
                    "content": {"type": "string", "description": "The complete new content."}
                }, "required": ["path", "content"]}}}
        ])
    })
}

/// Checks normalised arguments against the tool's schema (required fields, types, ranges); the
/// error names the first problem, for the model.
pub fn validate(name: &str, arguments: &Map<String, Value>) -> Result<(), String> {
    let string = |key: &str, required: bool| match arguments.get(key) {
        None if required => Err(format!("missing required string argument '{key}'")),
        None => Ok(()),
        Some(Value::String(_)) => Ok(()),
        Some(other) => Err(format!("argument '{key}' must be a string, got {other}")),
    };
    let positive = |key: &str| match arguments.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(value) if value.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        Some(other) => Err(format!(
            "argument '{key}' must be a positive integer, got {other}"
        )),
    };
    match name {
        "terminal" => {
            string("command", true)?;
            if arguments
                .get("command")
                .and_then(Value::as_str)
                .is_some_and(|command| command.trim().is_empty())
            {
                return Err("argument 'command' is blank".to_owned());
            }
            positive("timeout")
        }
        "read_file" => {
            string("path", true)?;
            positive("offset")?;
            positive("limit")
        }
        "write_file" => {
            string("path", true)?;
            string("content", true)
        }
        _ => Ok(()),
    }
}

/// The three tools over one lease of a sandbox server or pool.
#[derive(Debug, Clone)]
pub struct SlotTools {
    client: Client,
    lease_id: String,
    command_timeout: Duration,
}

impl SlotTools {
    /// Tools on `lease_id`; commands get `command_timeout` unless the model asks for less or the
    /// rollout has less left.
    pub fn new(client: Client, lease_id: impl Into<String>, command_timeout: Duration) -> Self {
        Self {
            client,
            lease_id: lease_id.into(),
            command_timeout,
        }
    }

    async fn terminal(&self, arguments: &Map<String, Value>, deadline: Deadline) -> Answer {
        let command = arguments
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let asked = arguments
            .get("timeout")
            .and_then(Value::as_u64)
            .map_or(self.command_timeout, Duration::from_secs);
        let timeout = asked.min(self.command_timeout).min(deadline.remaining());
        let mut body = ExecBody::new(command);
        body.timeout_s = Some(timeout.as_secs_f64().max(0.001));
        body.max_output_chars = Some(TERMINAL_MAX_OUTPUT_CHARS);
        match self.client.exec(&self.lease_id, &body).await {
            Ok(result) => Answer {
                content: python_object(
                    &[
                        (
                            "output",
                            Value::String(strip_ansi_escapes::strip_str(&result.output)),
                        ),
                        ("exit_code", Value::from(result.exit_code)),
                        ("error", Value::Null),
                    ],
                    false,
                ),
                outcome: Outcome::Ok,
            },
            Err(error) => slot_failure(&error, true),
        }
    }

    async fn read_file(&self, arguments: &Map<String, Value>) -> Answer {
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let relative = match workspace_relative(path) {
            Ok(relative) => relative,
            Err(message) => return Answer::error(message),
        };
        let bytes = match self.client.read_file(&self.lease_id, &relative).await {
            Ok(bytes) => bytes,
            Err(error) => return slot_failure(&error, false),
        };
        let offset = arguments.get("offset").and_then(Value::as_u64).unwrap_or(1);
        let limit = arguments
            .get("limit")
            .and_then(Value::as_u64)
            .unwrap_or(READ_DEFAULT_LINES)
            .min(READ_MAX_LINES);
        Answer {
            content: number_lines(&bytes, path, offset, limit),
            outcome: Outcome::Ok,
        }
    }

    async fn write_file(&self, arguments: &Map<String, Value>) -> Answer {
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = arguments
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let relative = match workspace_relative(path) {
            Ok(relative) => relative,
            Err(message) => return Answer::error(message),
        };
        match self
            .client
            .write_file(&self.lease_id, &relative, content.as_bytes().to_vec())
            .await
        {
            Ok(()) => Answer {
                content: python_object(
                    &[
                        ("path", Value::from(path)),
                        ("bytes_written", Value::from(content.len())),
                    ],
                    false,
                ),
                outcome: Outcome::Ok,
            },
            Err(error) => slot_failure(&error, false),
        }
    }
}

impl Toolbox for SlotTools {
    fn names(&self) -> &[&'static str] {
        &TOOL_NAMES
    }

    fn schemas(&self) -> &Value {
        schemas()
    }

    async fn call(&self, name: &str, arguments: &Map<String, Value>, deadline: Deadline) -> Answer {
        match name {
            "terminal" => self.terminal(arguments, deadline).await,
            "read_file" => self.read_file(arguments).await,
            "write_file" => self.write_file(arguments).await,
            other => Answer::error(format!("{other} is not a slot tool")),
        }
    }
}

/// A slot error as a tool answer: the slot being gone is fatal, a refused request is the
/// model's to fix.
fn slot_failure(error: &slotbox_client::Error, terminal: bool) -> Answer {
    let fatal = match error.code() {
        Some(ErrorCode::UnknownLease | ErrorCode::SlotLost | ErrorCode::Internal) => true,
        Some(_) => false,
        // The server is unreachable or answered nonsense.
        None => true,
    };
    let message = match error {
        slotbox_client::Error::Api { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let content = if terminal {
        python_object(
            &[
                ("output", Value::from("")),
                ("exit_code", Value::from(-1)),
                ("error", Value::from(message.as_str())),
                ("status", Value::from("error")),
            ],
            false,
        )
    } else {
        python_json(&json!({ "error": message }), false)
    };
    Answer {
        content,
        outcome: if fatal {
            Outcome::Fatal(message)
        } else {
            Outcome::Error
        },
    }
}

/// `notes/a.txt` and `/workspace/notes/a.txt` name the same file; other absolute paths are
/// outside the slot's files API.
pub fn workspace_relative(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("path is empty".to_owned());
    }
    if let Some(rest) = path.strip_prefix(WORKSPACE) {
        if rest.is_empty() || rest == "/" {
            return Err(format!("{path} is the workspace directory, not a file"));
        }
        if let Some(relative) = rest.strip_prefix('/') {
            return Ok(relative.to_owned());
        }
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path} is outside the workspace: file tools reach {WORKSPACE} only (use terminal for other files)"
        ));
    }
    Ok(path.to_owned())
}

/// `read_file`'s answer: the lines `[offset, offset + limit)` numbered `     N|text`.
fn number_lines(bytes: &[u8], path: &str, offset: u64, limit: u64) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len() as u64;
    let start = offset.saturating_sub(1);
    let mut content = String::new();
    let mut shown = 0u64;
    for (index, line) in lines
        .iter()
        .enumerate()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        if shown > 0 {
            content.push('\n');
        }
        let number = index + 1;
        if line.chars().count() > READ_MAX_LINE_CHARS {
            let kept: String = line.chars().take(READ_MAX_LINE_CHARS).collect();
            content.push_str(&format!("{number:>6}|{kept}... [line truncated]"));
        } else {
            content.push_str(&format!("{number:>6}|{line}"));
        }
        shown += 1;
    }
    let mut answer = vec![
        ("path", Value::from(path)),
        ("content", Value::String(content)),
        ("total_lines", Value::from(total)),
    ];
    if start + shown < total {
        answer.push(("truncated", Value::Bool(true)));
        answer.push(("next_offset", Value::from(start + shown + 1)));
    }
    python_object(&answer, false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn workspace_paths_map_to_relative_ones() {
        assert_eq!(workspace_relative("a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(workspace_relative("/workspace/a/b.txt").unwrap(), "a/b.txt");
        assert!(
            workspace_relative("/etc/passwd")
                .unwrap_err()
                .contains("outside")
        );
        assert!(workspace_relative("/workspace").is_err());
        assert!(workspace_relative("/workspace2/x").is_err());
        assert!(workspace_relative("").is_err());
    }

    #[test]
    fn read_file_numbers_lines_and_pages() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(
            number_lines(text, "f", 1, 500),
            r#"{"path": "f", "content": "     1|one\n     2|two\n     3|three", "total_lines": 3}"#
        );
        let page: Value = serde_json::from_str(&number_lines(text, "f", 2, 1)).unwrap();
        assert_eq!(page["content"], "     2|two");
        assert_eq!(page["next_offset"], 3);
        let past: Value = serde_json::from_str(&number_lines(text, "f", 9, 5)).unwrap();
        assert_eq!(past["content"], "");
    }

    #[test]
    fn arguments_are_checked_against_the_schemas() {
        let args = |value: Value| value.as_object().unwrap().clone();
        assert!(validate("terminal", &args(json!({"command": "ls"}))).is_ok());
        assert!(validate("terminal", &args(json!({"command": " "}))).is_err());
        assert!(validate("terminal", &args(json!({"cmd": "ls"}))).is_err());
        assert!(validate("terminal", &args(json!({"command": 1}))).is_err());
        assert!(validate("terminal", &args(json!({"command": "ls", "timeout": 0}))).is_err());
        assert!(validate("read_file", &args(json!({"path": "a", "limit": 5}))).is_ok());
        assert!(validate("read_file", &args(json!({"path": "a", "offset": -1}))).is_err());
        assert!(validate("write_file", &args(json!({"path": "a"}))).is_err());
    }

    #[test]
    fn schemas_list_the_three_tools_sorted_as_named() {
        let mut names: Vec<&str> = schemas()
            .as_array()
            .unwrap()
            .iter()
            .map(|tool| tool["function"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, TOOL_NAMES);
    }
}
