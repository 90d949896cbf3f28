//! Writing trajectories: the native JSONL, plus Hermes ShareGPT and Atropos group shapes.
//!
//! Every line is flushed as soon as its rollout finishes, so a run stopped by Ctrl-C (or killed)
//! keeps everything that finished before.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde_json::Value;
use serde_json::json;

use crate::agent::Termination;
use crate::error::Error;
use crate::error::Result;
use crate::hermes_text;
use crate::message::Message;
use crate::message::Role;
use crate::rollout::Trajectory;
use crate::rollout::tools_system_prompt;

/// The extra shapes `--format` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hermes ShareGPT (`conversations` of system/human/gpt/tool), for SFT.
    ShareGpt,
    /// Atropos `ScoredDataGroup`-shaped groups (one line per task, its samples together).
    Atropos,
}

impl Format {
    /// The file written beside `out`: `trajectories.jsonl` → `trajectories.sharegpt.jsonl`.
    pub fn path_beside(self, out: &Path) -> PathBuf {
        let suffix = match self {
            Format::ShareGpt => "sharegpt",
            Format::Atropos => "atropos",
        };
        let stem = out
            .file_stem()
            .map_or_else(|| "trajectories".into(), |stem| stem.to_string_lossy());
        out.with_file_name(format!("{stem}.{suffix}.jsonl"))
    }
}

struct Lines {
    path: PathBuf,
    file: BufWriter<File>,
}

impl Lines {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|source| Error::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file: BufWriter::new(file),
        })
    }

    fn write(&mut self, value: &impl serde::Serialize) -> Result<()> {
        let io = |source| Error::Io {
            what: format!("writing {}", self.path.display()),
            source,
        };
        serde_json::to_writer(&mut self.file, value)
            .map_err(|error| io(std::io::Error::other(error)))?;
        self.file.write_all(b"\n").map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// Where finished trajectories go.
pub struct Sink {
    native: Lines,
    sharegpt: Option<Lines>,
    atropos: Option<(Lines, HashMap<String, Vec<Trajectory>>)>,
    samples: u32,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sink")
            .field("native", &self.native.path)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Creates `out` and the files of `formats` beside it; `samples` is the group size.
    pub fn create(out: &Path, formats: &[Format], samples: u32) -> Result<Self> {
        let mut sink = Self {
            native: Lines::create(out)?,
            sharegpt: None,
            atropos: None,
            samples,
        };
        for format in formats {
            let path = format.path_beside(out);
            match format {
                Format::ShareGpt => sink.sharegpt = Some(Lines::create(&path)?),
                Format::Atropos => sink.atropos = Some((Lines::create(&path)?, HashMap::new())),
            }
        }
        Ok(sink)
    }

    /// Writes one trajectory (and an Atropos group once all its samples are in).
    pub fn write(&mut self, trajectory: Trajectory) -> Result<()> {
        self.native.write(&trajectory)?;
        if let Some(lines) = &mut self.sharegpt {
            lines.write(&sharegpt(&trajectory))?;
        }
        if let Some((lines, pending)) = &mut self.atropos {
            let task_id = trajectory.task_id.clone();
            let group = pending.entry(task_id.clone()).or_default();
            group.push(trajectory);
            if group.len() >= self.samples as usize {
                let group = pending.remove(&task_id).unwrap_or_default();
                lines.write(&atropos_group(&group))?;
            }
        }
        Ok(())
    }

    /// Atropos groups left incomplete (a cancelled run); they are in the native file only.
    pub fn incomplete_groups(&self) -> usize {
        self.atropos
            .as_ref()
            .map_or(0, |(_, pending)| pending.len())
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The Hermes ShareGPT record of a trajectory: every gpt turn opens with a `<think>` block (empty
/// without reasoning), calls as `<tool_call>` JSON, a turn's tool results in one `tool` value of
/// `<tool_response>` blocks, and the system prompt carrying the `<tools>` block.
pub fn sharegpt(trajectory: &Trajectory) -> Value {
    let mut conversations: Vec<Value> = Vec::new();
    let tools_prompt = tools_system_prompt(crate::tools::schemas());
    let has_system = trajectory
        .messages
        .first()
        .is_some_and(|message| message.role == Role::System);
    if !has_system {
        conversations.push(json!({"from": "system", "value": tools_prompt}));
    }
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut pending_tool: Vec<String> = Vec::new();
    let flush = |pending: &mut Vec<String>, conversations: &mut Vec<Value>| {
        if !pending.is_empty() {
            conversations.push(json!({"from": "tool", "value": pending.join("\n")}));
            pending.clear();
        }
    };
    for message in &trajectory.messages {
        if message.role != Role::Tool {
            flush(&mut pending_tool, &mut conversations);
        }
        match message.role {
            Role::System => {
                let value = if message.content.contains("<tools>") {
                    message.content.clone()
                } else {
                    format!("{}\n\n{tools_prompt}", message.content)
                };
                conversations.push(json!({"from": "system", "value": value}));
            }
            Role::User => conversations.push(json!({"from": "human", "value": message.content})),
            Role::Assistant => {
                for call in &message.tool_calls {
                    names.insert(&call.id, &call.function.name);
                }
                conversations.push(json!({"from": "gpt", "value": gpt_value(message)}));
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = names.get(id).copied().unwrap_or_default();
                pending_tool.push(hermes_text::response(id, name, &message.content));
            }
        }
    }
    flush(&mut pending_tool, &mut conversations);
    json!({
        "conversations": conversations,
        "timestamp": now_rfc3339(),
        "model": trajectory.model,
        "completed": trajectory.termination == Termination::Stop,
        "task_id": trajectory.task_id,
        "reward": trajectory.reward,
    })
}

fn gpt_value(message: &Message) -> String {
    let reasoning = message.reasoning_content.as_deref().unwrap_or_default();
    let mut value = format!("<think>\n{reasoning}\n</think>\n{}", message.content);
    if !message.tool_calls.is_empty() && !value.ends_with('\n') {
        value.push('\n');
    }
    hermes_text::with_calls(value, &message.tool_calls)
}

/// An Atropos `ScoredDataGroup`-shaped record of one task's samples: `scores` (a missing reward
/// scores 0.0), `messages`, per-sample `overrides` and `group_overrides.group_size`. Token ids
/// and masks are absent: an OpenAI-compatible endpoint returns text, and re-tokenising messages
/// is exactly what corrupts RL training; a trainer tokenises with its own tokenizer.
pub fn atropos_group(group: &[Trajectory]) -> Value {
    json!({
        "scores": group.iter().map(|t| t.reward.unwrap_or(0.0)).collect::<Vec<_>>(),
        "messages": group.iter().map(|t| &t.messages).collect::<Vec<_>>(),
        "overrides": group.iter().map(|t| json!({
            "task_id": t.task_id,
            "sample": t.sample,
            "termination": t.termination,
            "turns": t.turns,
            "context_truncated": t.context_truncated,
        })).collect::<Vec<_>>(),
        "group_overrides": {"group_size": group.len()},
        "env_id": group.first().map(|t| t.task_id.clone()),
    })
}
