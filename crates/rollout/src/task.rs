//! Tasks: one JSON object per line of a tasks file.
//!
//! `{"id", "prompt", "system"?, "setup"?: [commands], "verify"?: command, "max_turns"?,
//! "timeout_s"?}`. Unknown fields are refused, so a typo (`"verfy"`) is an error at load time
//! rather than a task silently run without its check.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;
use crate::error::Result;

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Unique in the file; trajectories carry it as `task_id`.
    pub id: String,
    /// The user message.
    pub prompt: String,
    /// A system message before it (else the run's default, if any).
    #[serde(default)]
    pub system: Option<String>,
    /// Commands run in the slot before the loop, in order; any non-zero exit fails the task.
    #[serde(default)]
    pub setup: Vec<String>,
    /// Command run in the same slot after the loop: exit 0 → reward 1.0, else 0.0; a number on
    /// its last output line overrides.
    #[serde(default)]
    pub verify: Option<String>,
    /// This task's turn limit (else the run's).
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// This task's wall-clock limit for the whole rollout, setup and loop (else the run's).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

impl Task {
    /// The task's own rollout deadline, if it sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
    }
}

/// Parses a tasks file: blank lines are skipped, every other line must be a task, ids unique.
pub fn parse_tasks(text: &str) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let task: Task = serde_json::from_str(line).map_err(|error| Error::InvalidTask {
            line: line_no,
            reason: error.to_string(),
        })?;
        let invalid = |reason: &str| Error::InvalidTask {
            line: line_no,
            reason: reason.to_owned(),
        };
        if task.id.is_empty() {
            return Err(invalid("`id` is empty"));
        }
        if task.prompt.trim().is_empty() {
            return Err(invalid("`prompt` is empty"));
        }
        if task.max_turns == Some(0) {
            return Err(invalid("`max_turns` must be at least 1"));
        }
        if let Some(seconds) = task.timeout_s
            && !(seconds.is_finite() && seconds > 0.0)
        {
            return Err(invalid("`timeout_s` must be a positive number of seconds"));
        }
        if !seen.insert(task.id.clone()) {
            return Err(invalid(&format!("duplicate task id {:?}", task.id)));
        }
        tasks.push(task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_minimal_and_full_tasks_and_skips_blank_lines() {
        let text = concat!(
            "{\"id\":\"a\",\"prompt\":\"do it\"}\n",
            "\n",
            "{\"id\":\"b\",\"prompt\":\"p\",\"system\":\"s\",\"setup\":[\"x\"],\"verify\":\"v\",",
            "\"max_turns\":3,\"timeout_s\":2.5}\n"
        );
        let tasks = parse_tasks(text).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].setup, vec!["x".to_owned()]);
        assert_eq!(tasks[1].timeout(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        for (text, needle) in [
            ("{\"id\":\"a\"}", "prompt"),
            ("not json", "expected"),
            ("{\"id\":\"a\",\"prompt\":\"p\",\"verfy\":\"x\"}", "verfy"),
            (
                "{\"id\":\"a\",\"prompt\":\"p\",\"max_turns\":0}",
                "max_turns",
            ),
            (
                "{\"id\":\"a\",\"prompt\":\"p\",\"timeout_s\":-1}",
                "timeout_s",
            ),
            ("{\"id\":\"\",\"prompt\":\"p\"}", "id"),
        ] {
            let error = parse_tasks(&format!("\n{text}")).unwrap_err().to_string();
            assert!(error.starts_with("tasks file line 2:"), "{error}");
            assert!(error.contains(needle), "{error} lacks {needle}");
        }
        let dup = "{\"id\":\"a\",\"prompt\":\"p\"}\n{\"id\":\"a\",\"prompt\":\"q\"}";
        assert!(
            parse_tasks(dup)
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
    }
}
