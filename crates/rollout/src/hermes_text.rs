//! Hermes' text rendering of tool calls and results: `<tool_call>` and `<tool_response>` blocks.
//!
//! Used twice: by the ShareGPT writer (hermes-agent's SFT format) and, with a text parser, for
//! the prompt itself — a server without tool-call support gets the conversation as plain text in
//! the format its system prompt asks the model to use, instead of `tool_calls` and `tool`
//! messages it may refuse or render without the calls.

use std::collections::HashMap;

use serde_json::Value;

use crate::message::Message;
use crate::message::Role;
use crate::message::ToolCall;
use crate::tools::python_object;

/// `text` followed by each call as `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`
/// (arguments as JSON when they parse, else as a string).
pub fn with_calls(mut text: String, calls: &[ToolCall]) -> String {
    for call in calls {
        let arguments = serde_json::from_str::<Value>(&call.function.arguments)
            .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
        let body = python_object(
            &[
                ("name", Value::from(call.function.name.as_str())),
                ("arguments", arguments),
            ],
            false,
        );
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("<tool_call>\n{body}\n</tool_call>"));
    }
    text
}

/// One result as `<tool_response>\n{"tool_call_id", "name", "content"}\n</tool_response>`.
pub fn response(call_id: &str, name: &str, content: &str) -> String {
    let body = python_object(
        &[
            ("tool_call_id", Value::from(call_id)),
            ("name", Value::from(name)),
            ("content", Value::from(content)),
        ],
        false,
    );
    format!("<tool_response>\n{body}\n</tool_response>")
}

/// The conversation as plain text turns: an assistant's calls become `<tool_call>` text in its
/// content, and each run of tool messages one message of `<tool_response>` blocks. That message
/// keeps the role `tool` (without a call id) so the context view still sees it as part of its
/// assistant's exchange; [`to_wire`] makes it the user turn it is sent as.
pub fn as_text_turns(messages: &[Message]) -> Vec<Message> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut responses: Vec<String> = Vec::new();
    for message in messages {
        if message.role != Role::Tool && !responses.is_empty() {
            out.push(responses_turn(&responses));
            responses.clear();
        }
        match message.role {
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = names.get(id).copied().unwrap_or_default();
                responses.push(response(id, name, &message.content));
            }
            Role::Assistant if !message.tool_calls.is_empty() => {
                for call in &message.tool_calls {
                    names.insert(&call.id, &call.function.name);
                }
                out.push(Message::assistant(
                    with_calls(message.content.clone(), &message.tool_calls),
                    message.reasoning_content.clone(),
                    Vec::new(),
                ));
            }
            _ => out.push(message.clone()),
        }
    }
    if !responses.is_empty() {
        out.push(responses_turn(&responses));
    }
    out
}

fn responses_turn(responses: &[String]) -> Message {
    let mut turn = Message::user(responses.join("\n"));
    turn.role = Role::Tool;
    turn
}

/// Text turns as sent: the responses turns become user messages.
pub fn to_wire(mut turns: Vec<Message>) -> Vec<Message> {
    for turn in &mut turns {
        if turn.role == Role::Tool {
            turn.role = Role::User;
        }
    }
    turns
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn calls_and_results_become_hermes_text_turns() {
        let messages = vec![
            Message::user("task"),
            Message::assistant(
                "Looking.",
                None,
                vec![
                    ToolCall::function("a", "terminal", "{\"command\": \"ls\"}"),
                    ToolCall::function("b", "read_file", "not json"),
                ],
            ),
            Message::tool("a", "{\"output\": \"x\\n\"}"),
            Message::tool("b", "{\"error\": \"no\"}"),
            Message::assistant("done", None, Vec::new()),
        ];
        let turns = to_wire(as_text_turns(&messages));
        assert_eq!(turns.len(), 4);
        assert_eq!(
            turns[1].content,
            "Looking.\n<tool_call>\n{\"name\": \"terminal\", \"arguments\": {\"command\": \"ls\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": \"not json\"}\n</tool_call>"
        );
        assert!(turns[1].tool_calls.is_empty());
        assert_eq!(turns[2].role, Role::User);
        assert_eq!(
            turns[2].content,
            "<tool_response>\n{\"tool_call_id\": \"a\", \"name\": \"terminal\", \"content\": \"{\\\"output\\\": \\\"x\\\\n\\\"}\"}\n</tool_response>\n<tool_response>\n{\"tool_call_id\": \"b\", \"name\": \"read_file\", \"content\": \"{\\\"error\\\": \\\"no\\\"}\"}\n</tool_response>"
        );
        assert_eq!(turns[3].content, "done");
    }
}
