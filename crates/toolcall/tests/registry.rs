//! The registry (`get_parser` / `list_parsers`) and the Python text helpers the rollout engine
//! builds its messages with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pretty_assertions::assert_eq;
use serde_json::json;
use slotbox_toolcall::{
    Error, Mode, list_parsers, parser, python_json, python_json_loads, python_repr_str_list,
    python_str,
};

const ALL: [&str; 17] = [
    "auto",
    "custom_xml",
    "deepseek_dsml",
    "deepseek_v3",
    "deepseek_v31",
    "deepseek_v3_1",
    "deepseek_v4",
    "glm45",
    "glm47",
    "hermes",
    "kimi_k2",
    "llama3_json",
    "llama4_json",
    "longcat",
    "mistral",
    "qwen",
    "qwen3_coder",
];

#[test]
fn list_parsers_is_python_sorted_and_includes_aliases() {
    assert_eq!(list_parsers(), ALL.to_vec());
}

#[test]
fn every_name_resolves_to_a_parser_reporting_that_name() {
    for name in ALL {
        assert_eq!(parser(name).unwrap().name(), name);
    }
}

#[test]
fn unknown_parser_error_is_the_reference_key_error_text() {
    let err = parser("nope").unwrap_err();
    assert!(matches!(&err, Error::UnknownParser { name, .. } if name == "nope"));
    assert_eq!(
        err.to_string(),
        format!(
            "Tool call parser 'nope' not found. Available parsers: ['{}']",
            ALL.join("', '")
        )
    );
}

#[test]
fn every_parser_passes_plain_text_through_in_both_modes() {
    let text = "Just a normal answer, no tools.";
    for name in ALL {
        for mode in [Mode::Strict, Mode::Lenient] {
            let parsed = parser(name).unwrap().parse(text, mode);
            assert_eq!(parsed.content.as_deref(), Some(text), "{name}");
            assert!(parsed.calls.is_empty(), "{name}");
        }
    }
}

#[test]
fn python_json_uses_python_separators_escapes_and_float_repr() {
    let value = json!({"b": [1, 1.0, 1e16, 0.00001, null, true], "a": "é\u{1F600}\n"});
    assert_eq!(
        python_json(&value, false),
        "{\"a\": \"é\u{1F600}\\n\", \"b\": [1, 1.0, 1e+16, 1e-05, null, true]}"
    );
    assert_eq!(
        python_json(&value, true),
        r#"{"a": "\u00e9\ud83d\ude00\n", "b": [1, 1.0, 1e+16, 1e-05, null, true]}"#
    );
}

#[test]
fn parsers_preserve_the_models_key_order() {
    let parsed = parser("hermes").unwrap().parse(
        r#"<tool_call>{"name": "f", "arguments": {"x":1,"a":2,"m":{"z":0,"b":1}}}</tool_call>"#,
        Mode::Strict,
    );
    assert_eq!(
        parsed.calls[0].arguments,
        r#"{"x": 1, "a": 2, "m": {"z": 0, "b": 1}}"#
    );
}

#[test]
fn python_str_prints_like_python() {
    assert_eq!(python_str(&json!("ls -la")), "ls -la");
    assert_eq!(python_str(&json!(42)), "42");
    assert_eq!(python_str(&json!(2.5)), "2.5");
    assert_eq!(python_str(&json!([1, 2])), "[1, 2]");
    assert_eq!(python_str(&json!(null)), "None");
    assert_eq!(python_str(&json!(false)), "False");
    assert_eq!(
        python_str(&json!({"a": "it's", "b": [null]})),
        r#"{'a': "it's", 'b': [None]}"#
    );
}

#[test]
fn repr_str_list_builds_the_unknown_tool_message() {
    let message = format!(
        "Unknown tool 'x'. Available tools: {}",
        python_repr_str_list(&["a", "b"])
    );
    assert_eq!(message, "Unknown tool 'x'. Available tools: ['a', 'b']");
    assert_eq!(python_repr_str_list(&["it's"]), r#"["it's"]"#);
}

#[test]
fn python_json_loads_reports_the_json_decode_error_text() {
    assert_eq!(
        python_json_loads(r#"{"a": [1, 2]}"#).unwrap(),
        json!({"a": [1, 2]})
    );
    assert_eq!(
        python_json_loads("ls -la").unwrap_err().to_string(),
        "Expecting value: line 1 column 1 (char 0)"
    );
    assert_eq!(
        python_json_loads("{\"a\": 1,\n}").unwrap_err().to_string(),
        "Expecting property name enclosed in double quotes: line 2 column 1 (char 9)"
    );
}
