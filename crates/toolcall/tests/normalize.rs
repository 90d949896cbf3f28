//! Every row of the §1.10 golden table of PR's `_normalize_tool_args`, for `terminal` and for
//! another tool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use slotbox_toolcall::normalize_tool_args;

/// `(raw, terminal result, terminal valid, other-tool result, other-tool valid)`.
fn golden_rows() -> Vec<(&'static str, Value, bool, Value, bool)> {
    vec![
        (
            r#"{"command":"ls"}"#,
            json!({"command": "ls"}),
            true,
            json!({"command": "ls"}),
            true,
        ),
        (
            r#"{"command":"  "}"#,
            json!({"command": "  "}),
            false,
            json!({"command": "  "}),
            true,
        ),
        (
            r#"{"input":"ls"}"#,
            json!({"command": "ls"}),
            false,
            json!({"input": "ls"}),
            true,
        ),
        (
            r#"{"cmd":"ls"}"#,
            json!({"cmd": "ls"}),
            false,
            json!({"cmd": "ls"}),
            true,
        ),
        (
            r#""{\"command\": \"ls\"}""#,
            json!({"command": "ls"}),
            false,
            json!({"command": "ls"}),
            false,
        ),
        (
            r#""ls -la""#,
            json!({"command": "ls -la"}),
            false,
            json!({"input": "ls -la"}),
            false,
        ),
        (
            "ls -la",
            json!({"command": "ls -la"}),
            false,
            json!({"input": "ls -la"}),
            false,
        ),
        (
            "42",
            json!({"command": "42"}),
            false,
            json!({"input": 42}),
            false,
        ),
        (
            "[1,2]",
            json!({"command": "[1, 2]"}),
            false,
            json!({"input": [1, 2]}),
            false,
        ),
        (
            "null",
            json!({"command": "None"}),
            false,
            json!({"input": null}),
            false,
        ),
        (
            "",
            json!({"command": ""}),
            false,
            json!({"input": ""}),
            false,
        ),
        (
            r#""""#,
            json!({"command": ""}),
            false,
            json!({"input": ""}),
            false,
        ),
        (
            r#""[1,2]""#,
            json!({"command": "[1,2]"}),
            false,
            json!({"input": "[1,2]"}),
            false,
        ),
    ]
}

#[test]
fn terminal_rows_match_the_golden_table() {
    for (raw, want, valid, _, _) in golden_rows() {
        let (map, schema_valid) = normalize_tool_args("terminal", raw);
        assert_eq!(
            (Value::Object(map), schema_valid),
            (want, valid),
            "raw {raw:?}"
        );
    }
}

#[test]
fn other_tool_rows_match_the_golden_table() {
    for (raw, _, _, want, valid) in golden_rows() {
        let (map, schema_valid) = normalize_tool_args("read_file", raw);
        assert_eq!(
            (Value::Object(map), schema_valid),
            (want, valid),
            "raw {raw:?}"
        );
    }
}

#[test]
fn terminal_str_of_other_values_is_python_str() {
    let (map, _) = normalize_tool_args("terminal", r#"[true, null, "a", 1.0, {"k": "it's"}]"#);
    assert_eq!(
        Value::Object(map),
        json!({"command": r#"[True, None, 'a', 1.0, {'k': "it's"}]"#})
    );
}

#[test]
fn terminal_keeps_an_existing_command_next_to_input() {
    let (map, valid) = normalize_tool_args("terminal", r#"{"input": "x", "command": "ls"}"#);
    assert_eq!(Value::Object(map), json!({"input": "x", "command": "ls"}));
    assert!(valid);
}
