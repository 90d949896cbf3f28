//! Golden rows and quirks of every parser (spec §3), in strict and lenient mode.
//!
//! Expected values are what hermes-agent's reference parsers return for the same text (MAIN04
//! where versions differ); ids are random, so only their shape is compared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use slotbox_toolcall::{Diagnostics, Mode, Parsed, parser};

fn strict(name: &str, text: &str) -> Parsed {
    parser(name).unwrap().parse(text, Mode::Strict)
}

fn lenient(name: &str, text: &str) -> Parsed {
    parser(name).unwrap().parse(text, Mode::Lenient)
}

/// `(name, arguments)` of each call.
fn calls(parsed: &Parsed) -> Vec<(&str, &str)> {
    parsed
        .calls
        .iter()
        .map(|c| (c.name.as_str(), c.arguments.as_str()))
        .collect()
}

fn assert_pass_through(parsed: &Parsed, text: &str) {
    assert_eq!(parsed.content.as_deref(), Some(text));
    assert!(parsed.calls.is_empty(), "{:?}", parsed.calls);
}

fn assert_both_pass_through(name: &str, text: &str) {
    assert_pass_through(&strict(name, text), text);
    assert_pass_through(&lenient(name, text), text);
}

fn is_uuid8_id(id: &str) -> bool {
    id.len() == 13
        && id.starts_with("call_")
        && id[5..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn diag(found: usize, dropped: usize, recovered: usize, single: usize) -> Diagnostics {
    Diagnostics {
        found,
        dropped,
        recovered_truncated: recovered,
        single_encoded: single,
    }
}

mod hermes {
    use pretty_assertions::assert_eq;

    use super::*;

    const WEATHER: &str =
        r#"<tool_call>{"name": "get_weather", "arguments": {"city": "NYC"}}</tool_call>"#;

    #[test]
    fn single_call_has_no_content_and_a_uuid8_id() {
        for mode_result in [strict("hermes", WEATHER), lenient("hermes", WEATHER)] {
            assert_eq!(mode_result.content, None);
            assert_eq!(
                calls(&mode_result),
                vec![("get_weather", r#"{"city": "NYC"}"#)]
            );
            assert!(
                is_uuid8_id(&mode_result.calls[0].id),
                "{}",
                mode_result.calls[0].id
            );
        }
    }

    #[test]
    fn multiple_calls_keep_order_and_text_after_is_dropped() {
        let text = concat!(
            "Let me check. ",
            r#"<tool_call>{"name": "a", "arguments": {}}</tool_call>"#,
            "\n",
            r#"<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call> trailing words"#
        );
        let parsed = strict("hermes", text);
        assert_eq!(parsed.content.as_deref(), Some("Let me check."));
        assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", r#"{"x": 1}"#)]);
        assert_eq!(parsed.diagnostics, diag(2, 0, 0, 0));
        assert_eq!(lenient("hermes", text).calls.len(), 2);
    }

    #[test]
    fn think_block_before_the_call_stays_in_content() {
        let text =
            "<think>plan</think>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(
            strict("hermes", text).content.as_deref(),
            Some("<think>plan</think>")
        );
    }

    #[test]
    fn no_tag_and_empty_tag_pair_pass_through() {
        assert_both_pass_through("hermes", "This is just a normal response.");
        assert_both_pass_through("hermes", "<tool_call></tool_call>");
        assert_both_pass_through("hermes", "<tool_call>  \n </tool_call>");
    }

    #[test]
    fn trailing_unclosed_call_is_accepted() {
        let parsed = strict(
            "hermes",
            r#"<tool_call>{"name": "truncated", "arguments": {}}"#,
        );
        assert_eq!(calls(&parsed), vec![("truncated", "{}")]);
    }

    #[test]
    fn missing_arguments_become_an_empty_object() {
        let parsed = strict("hermes", r#"<tool_call>{"name": "ping"}</tool_call>"#);
        assert_eq!(calls(&parsed), vec![("ping", "{}")]);
    }

    #[test]
    fn arguments_are_reserialised_like_python_json_dumps_keeping_key_order() {
        let parsed = strict(
            "hermes",
            r#"<tool_call>{"name":"f","arguments":{"x":1,"a":[1.5,1e16,true,null,"é"],"n":NaN}}</tool_call>"#,
        );
        assert_eq!(
            calls(&parsed),
            vec![(
                "f",
                r#"{"x": 1, "a": [1.5, 1e+16, true, null, "é"], "n": NaN}"#
            )]
        );
    }

    #[test]
    fn big_integers_and_repeated_keys_survive_like_python() {
        let parsed = strict(
            "hermes",
            r#"<tool_call>{"name":"f","arguments":{"b":1,"big":123456789012345678901234567890,"b":2}}</tool_call>"#,
        );
        assert_eq!(
            calls(&parsed),
            vec![("f", r#"{"b": 2, "big": 123456789012345678901234567890}"#)]
        );
    }

    #[test]
    fn strict_double_encodes_string_arguments() {
        let text = r#"<tool_call>{"name": "terminal", "arguments": "ls -la"}</tool_call>"#;
        assert_eq!(
            calls(&strict("hermes", text)),
            vec![("terminal", r#""ls -la""#)]
        );
    }

    #[test]
    fn lenient_keeps_string_arguments_single_encoded_and_counts_them() {
        let text = r#"<tool_call>{"name": "terminal", "arguments": "ls -la"}</tool_call>"#;
        let parsed = lenient("hermes", text);
        assert_eq!(calls(&parsed), vec![("terminal", "ls -la")]);
        assert_eq!(parsed.diagnostics, diag(1, 0, 0, 1));
    }

    #[test]
    fn strict_is_all_or_nothing_on_one_malformed_body() {
        let text = concat!(
            r#"<tool_call>{"name": "a", "arguments": {}}</tool_call>"#,
            r#"<tool_call>{"name": not-json}</tool_call>"#
        );
        let parsed = strict("hermes", text);
        assert_pass_through(&parsed, text);
        assert_eq!(parsed.diagnostics, Diagnostics::default());
    }

    #[test]
    fn lenient_keeps_the_valid_calls_and_counts_the_dropped_one() {
        let text = concat!(
            r#"<tool_call>{"name": "a", "arguments": {}}</tool_call>"#,
            r#"<tool_call>{"name": not-json}</tool_call>"#
        );
        let parsed = lenient("hermes", text);
        assert_eq!(calls(&parsed), vec![("a", "{}")]);
        assert_eq!(parsed.diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn strict_discards_everything_when_a_later_call_is_truncated() {
        let text = concat!(
            r#"<tool_call>{"name": "a", "arguments": {}}</tool_call>"#,
            r#"<tool_call>{"name": "terminal", "arguments": {"command": "ls -la"#
        );
        assert_pass_through(&strict("hermes", text), text);
    }

    #[test]
    fn lenient_recovers_a_truncated_trailing_call() {
        let text = r#"<tool_call>{"name": "terminal", "arguments": {"command": "ls -la"#;
        assert_pass_through(&strict("hermes", text), text);
        let parsed = lenient("hermes", text);
        assert_eq!(
            calls(&parsed),
            vec![("terminal", r#"{"command": "ls -la"}"#)]
        );
        assert_eq!(parsed.diagnostics, diag(1, 0, 1, 0));
    }

    #[test]
    fn lenient_recovers_a_call_cut_inside_the_closing_tag() {
        let text = r#"<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_ca"#;
        assert_pass_through(&strict("hermes", text), text);
        let parsed = lenient("hermes", text);
        assert_eq!(calls(&parsed), vec![("a", r#"{"x": 1}"#)]);
        assert_eq!(parsed.diagnostics.recovered_truncated, 1);
    }

    #[test]
    fn lenient_never_recovers_a_cut_off_name_or_missing_arguments() {
        for text in [
            r#"<tool_call>{"name": "termin"#,
            r#"<tool_call>{"name": "terminal", "argum"#,
        ] {
            let parsed = lenient("hermes", text);
            assert_pass_through(&parsed, text);
            assert_eq!(parsed.diagnostics, diag(1, 1, 0, 0), "{text}");
        }
    }

    #[test]
    fn lenient_only_recovers_the_last_call() {
        // The first body is cut off but closed by its tag: malformed, not truncated.
        let text = concat!(
            r#"<tool_call>{"name": "a", "arguments": {"x": "y</tool_call>"#,
            r#"<tool_call>{"name": "b", "arguments": {}}</tool_call>"#
        );
        let parsed = lenient("hermes", text);
        assert_eq!(calls(&parsed), vec![("b", "{}")]);
        assert_eq!(parsed.diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn a_body_without_name_is_skipped_as_in_main04() {
        let text = concat!(
            r#"<tool_call>{"x": 1}</tool_call>"#,
            r#"<tool_call>{"name": "b"}</tool_call>"#
        );
        assert_eq!(calls(&strict("hermes", text)), vec![("b", "{}")]);
        assert_both_pass_through("hermes", r#"<tool_call>{"x": 1}</tool_call>"#);
        assert_eq!(lenient("hermes", text).diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn strict_passes_through_a_non_string_name_or_non_string_member_test() {
        for text in [
            r#"<tool_call>{"name": 5, "arguments": {}}</tool_call>"#,
            r#"<tool_call>"name"</tool_call>"#,
            r#"<tool_call>42</tool_call>"#,
        ] {
            assert_pass_through(&strict("hermes", text), text);
        }
        // A list without the element "name" is skipped by the membership test instead.
        assert_pass_through(
            &strict("hermes", "<tool_call>[1, 2]</tool_call>"),
            "<tool_call>[1, 2]</tool_call>",
        );
    }

    #[test]
    fn null_arguments_are_the_json_null_text() {
        let parsed = strict(
            "hermes",
            r#"<tool_call>{"name": "a", "arguments": null}</tool_call>"#,
        );
        assert_eq!(calls(&parsed), vec![("a", "null")]);
    }

    #[test]
    fn qwen_is_the_hermes_parser_under_another_name() {
        let text = concat!(
            "pre ",
            r#"<tool_call>{"name": "a", "arguments": "s"}</tool_call>"#,
            r#"<tool_call>{"x": 1}</tool_call>"#,
            r#"<tool_call>{"name": "b", "arguments": {"y": 2"#
        );
        for run in [strict, lenient] {
            let (qwen, hermes) = (run("qwen", text), run("hermes", text));
            assert_eq!(calls(&qwen), calls(&hermes));
            assert_eq!(qwen.content, hermes.content);
            assert_eq!(qwen.diagnostics, hermes.diagnostics);
        }
        assert_eq!(parser("qwen").unwrap().name(), "qwen");
    }

    #[test]
    fn longcat_uses_its_own_tags() {
        let text =
            r#"pre <longcat_tool_call>{"name": "a", "arguments": {"x": 1}}</longcat_tool_call>"#;
        let parsed = strict("longcat", text);
        assert_eq!(parsed.content.as_deref(), Some("pre"));
        assert_eq!(calls(&parsed), vec![("a", r#"{"x": 1}"#)]);
        assert_both_pass_through("longcat", r#"<tool_call>{"name": "a"}</tool_call>"#);
    }

    #[test]
    fn longcat_strict_passes_through_a_nameless_body_where_hermes_skips_it() {
        let text = concat!(
            r#"<longcat_tool_call>{"name": "a"}</longcat_tool_call>"#,
            r#"<longcat_tool_call>{"x": 1}</longcat_tool_call>"#
        );
        assert_pass_through(&strict("longcat", text), text);
        let parsed = lenient("longcat", text);
        assert_eq!(calls(&parsed), vec![("a", "{}")]);
        assert_eq!(parsed.diagnostics.dropped, 1);
    }
}

mod llama {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn bare_json_object_is_a_call() {
        let text = r#"{"name": "get_weather", "arguments": {"city": "NYC"}}"#;
        let parsed = strict("llama3_json", text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("get_weather", r#"{"city": "NYC"}"#)]);
        assert!(is_uuid8_id(&parsed.calls[0].id));
    }

    #[test]
    fn python_tag_prefix_marks_the_content_end() {
        let parsed = strict(
            "llama3_json",
            r#"<|python_tag|>{"name": "ping", "arguments": {}}"#,
        );
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("ping", "{}")]);
        let parsed = strict(
            "llama3_json",
            r#"I will {maybe} <|python_tag|>{"name": "ping", "parameters": {"q": "x"}}"#,
        );
        assert_eq!(parsed.content.as_deref(), Some("I will {maybe}"));
        assert_eq!(calls(&parsed), vec![("ping", r#"{"q": "x"}"#)]);
    }

    #[test]
    fn multiple_objects_and_content_before_the_first_brace() {
        let text = r#"preamble {"name":"a","arguments":{"x":1}} and {"name":"b","arguments":{"y":2}} after"#;
        let parsed = strict("llama3_json", text);
        assert_eq!(parsed.content.as_deref(), Some("preamble"));
        assert_eq!(
            calls(&parsed),
            vec![("a", r#"{"x": 1}"#), ("b", r#"{"y": 2}"#)]
        );
    }

    #[test]
    fn content_ends_at_the_first_brace_even_when_it_is_not_a_call() {
        let text = r#"x {not json} {"name": "a", "arguments": {}}"#;
        assert_eq!(strict("llama3_json", text).content.as_deref(), Some("x"));
    }

    #[test]
    fn whitespace_only_prefix_gives_empty_content_not_none() {
        let parsed = strict("llama3_json", r#"  {"name": "a", "arguments": {}}"#);
        assert_eq!(parsed.content.as_deref(), Some(""));
    }

    #[test]
    fn nested_call_inside_another_object_is_not_found() {
        assert_both_pass_through(
            "llama3_json",
            r#"{"outer": {"name": "x", "arguments": {}}}"#,
        );
    }

    #[test]
    fn name_without_arguments_is_skipped() {
        assert_both_pass_through("llama3_json", r#"{"name":"c"}"#);
        assert_both_pass_through("llama3_json", r#"{"foo": "bar"}"#);
    }

    #[test]
    fn string_arguments_are_passed_raw_and_others_dumped() {
        let text = r#"{"name": "a", "arguments": "not json"} {"name": "b", "arguments": [1, 2]}"#;
        assert_eq!(
            calls(&strict("llama3_json", text)),
            vec![("a", "not json"), ("b", "[1, 2]")]
        );
    }

    #[test]
    fn of_two_adjacent_objects_only_the_first_is_read() {
        let text = r#"{"name":"a","arguments":{}}{"name":"b","arguments":{}}"#;
        assert_eq!(calls(&strict("llama3_json", text)), vec![("a", "{}")]);
    }

    #[test]
    fn llama4_json_is_the_same_parser() {
        let parsed = strict("llama4_json", r#"{"name":"x","arguments":{}}"#);
        assert_eq!(calls(&parsed), vec![("x", "{}")]);
        assert_eq!(parser("llama4_json").unwrap().name(), "llama4_json");
    }

    #[test]
    fn lenient_recovers_a_truncated_trailing_call() {
        let text = r#"Running it: {"name": "terminal", "arguments": {"command": "ls -la"#;
        assert_pass_through(&strict("llama3_json", text), text);
        let parsed = lenient("llama3_json", text);
        assert_eq!(parsed.content.as_deref(), Some("Running it:"));
        assert_eq!(
            calls(&parsed),
            vec![("terminal", r#"{"command": "ls -la"}"#)]
        );
        assert_eq!(parsed.diagnostics, diag(1, 0, 1, 0));
    }

    #[test]
    fn lenient_counts_named_objects_that_are_not_calls() {
        let text = r#"{"name": "a", "arguments": {}} {"name": 5, "arguments": {}}"#;
        assert_eq!(strict("llama3_json", text).calls.len(), 1);
        assert_eq!(lenient("llama3_json", text).diagnostics, diag(2, 1, 0, 0));
    }
}

mod mistral {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn pre_v11_array_with_content() {
        let text = r#"content before[TOOL_CALLS] [{"name":"a","arguments":{"x":1}}, {"name":"b","arguments":{"y":2}}]"#;
        let parsed = strict("mistral", text);
        assert_eq!(parsed.content.as_deref(), Some("content before"));
        assert_eq!(
            calls(&parsed),
            vec![("a", r#"{"x": 1}"#), ("b", r#"{"y": 2}"#)]
        );
        for call in &parsed.calls {
            assert_eq!(call.id.len(), 9);
            assert!(call.id.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn pre_v11_single_object() {
        let parsed = strict(
            "mistral",
            r#"hi[TOOL_CALLS] {"name":"a","arguments":{"x":1}}"#,
        );
        assert_eq!(parsed.content.as_deref(), Some("hi"));
        assert_eq!(calls(&parsed), vec![("a", r#"{"x": 1}"#)]);
    }

    #[test]
    fn pre_v11_string_arguments_pass_through_and_nameless_elements_are_skipped() {
        let text = r#"[TOOL_CALLS] [{"name":"a","arguments":"raw"}, {"arguments":{}}]"#;
        assert_eq!(calls(&strict("mistral", text)), vec![("a", "raw")]);
        assert_eq!(lenient("mistral", text).diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn pre_v11_non_dict_arguments_fail_strict_and_drop_in_lenient() {
        let text = r#"[TOOL_CALLS] [{"name":"a","arguments":[1]}, {"name":"b","arguments":{}}]"#;
        assert_pass_through(&strict("mistral", text), text);
        let parsed = lenient("mistral", text);
        assert_eq!(calls(&parsed), vec![("b", "{}")]);
        assert_eq!(parsed.diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn pre_v11_invalid_json_falls_back_to_scanning_objects() {
        let text = r#"[TOOL_CALLS] [{"name":"a","arguments":{}} {"name":"b","arguments":{"x":1}}]"#;
        assert_eq!(
            calls(&strict("mistral", text)),
            vec![("a", "{}"), ("b", r#"{"x": 1}"#)]
        );
    }

    #[test]
    fn pre_v11_list_followed_by_text_is_skipped_whole_by_the_fallback() {
        let text = r#"[TOOL_CALLS] [{"name":"a","arguments":{}}] trailing"#;
        assert_both_pass_through("mistral", text);
    }

    #[test]
    fn malformed_pre_v11_falls_through() {
        assert_both_pass_through("mistral", "x[TOOL_CALLS] [{bad]");
    }

    #[test]
    fn v11_name_then_brace_chunks() {
        let text = r#"pre[TOOL_CALLS]get_weather{"city":"NYC"}[TOOL_CALLS]ping{}"#;
        let parsed = strict("mistral", text);
        assert_eq!(parsed.content.as_deref(), Some("pre"));
        assert_eq!(
            calls(&parsed),
            vec![("get_weather", r#"{"city": "NYC"}"#), ("ping", "{}")]
        );
    }

    #[test]
    fn v11_invalid_json_arguments_are_kept_raw() {
        let parsed = strict("mistral", "[TOOL_CALLS]f{bad json");
        assert_eq!(calls(&parsed), vec![("f", "{bad json")]);
        assert_eq!(
            calls(&lenient("mistral", "[TOOL_CALLS]f{bad json")),
            vec![("f", "{bad json")]
        );
    }

    #[test]
    fn space_then_text_before_a_brace_is_detected_as_v11_named_junk() {
        let parsed = strict(
            "mistral",
            r#"[TOOL_CALLS] junk {"name": "a", "arguments": {}}"#,
        );
        assert_eq!(
            calls(&parsed),
            vec![("junk", r#"{"name": "a", "arguments": {}}"#)]
        );
    }

    #[test]
    fn v11_chunk_without_brace_is_skipped() {
        let parsed = strict("mistral", r#"[TOOL_CALLS]noargs[TOOL_CALLS]g{"a": [1,2]}"#);
        assert_eq!(calls(&parsed), vec![("g", r#"{"a": [1, 2]}"#)]);
    }

    #[test]
    fn no_bot_token_passes_through() {
        assert_both_pass_through("mistral", "Just a reply.");
    }

    #[test]
    fn lenient_repairs_a_truncated_pre_v11_array() {
        let text = r#"[TOOL_CALLS] [{"name":"a","arguments":{}}, {"name":"b","arguments":{"x":"y"#;
        // The reference's object scan finds only the complete first call.
        assert_eq!(calls(&strict("mistral", text)), vec![("a", "{}")]);
        let parsed = lenient("mistral", text);
        assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", r#"{"x": "y"}"#)]);
        assert_eq!(parsed.diagnostics, diag(2, 0, 1, 0));
    }

    #[test]
    fn lenient_repairs_truncated_v11_arguments_of_the_last_chunk() {
        let text = r#"[TOOL_CALLS]a{}[TOOL_CALLS]terminal{"command": "ls -la"#;
        assert_eq!(
            calls(&strict("mistral", text)),
            vec![("a", "{}"), ("terminal", r#"{"command": "ls -la"#)]
        );
        let parsed = lenient("mistral", text);
        assert_eq!(
            calls(&parsed),
            vec![("a", "{}"), ("terminal", r#"{"command": "ls -la"}"#)]
        );
        assert_eq!(parsed.diagnostics, diag(2, 0, 1, 0));
    }
}

mod deepseek {
    use pretty_assertions::assert_eq;

    use super::*;

    const B: &str = "<｜tool▁calls▁begin｜>";
    const CB: &str = "<｜tool▁call▁begin｜>";
    const SEP: &str = "<｜tool▁sep｜>";
    const CE: &str = "<｜tool▁call▁end｜>";
    const E: &str = "<｜tool▁calls▁end｜>";

    #[test]
    fn v3_single_call_with_fullwidth_tokens() {
        let text =
            format!("{B}{CB}function{SEP}get_weather\n```json\n{{\"city\": \"NYC\"}}\n```{CE}{E}");
        let parsed = strict("deepseek_v3", &text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("get_weather", r#"{"city": "NYC"}"#)]);
        assert!(is_uuid8_id(&parsed.calls[0].id));
    }

    #[test]
    fn v3_multiple_calls_with_flexible_whitespace_and_content() {
        let text = format!(
            "Hi {B}{CB}function{SEP}a\n```json\n{{}}\n```{CE}\n{CB}function{SEP}b  ```json {{\"x\": 1}} ```  {CE}{E} after"
        );
        let parsed = strict("deepseek_v3", &text);
        assert_eq!(parsed.content.as_deref(), Some("Hi"));
        assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", r#"{"x": 1}"#)]);
    }

    #[test]
    fn v3_begin_token_without_blocks_passes_through() {
        assert_both_pass_through("deepseek_v3", &format!("{B} nothing"));
        // Blocks without the calls-begin token do not count either.
        assert_both_pass_through(
            "deepseek_v3",
            &format!("{CB}function{SEP}a\n```json\n{{}}\n```{CE}"),
        );
    }

    #[test]
    fn v3_1_and_its_alias_take_raw_arguments_across_lines() {
        let text = format!("x {B}{CB}a{SEP}{{}}{CE}{CB} b {SEP}\n{{\"y\":\n2}}\n{CE}");
        for name in ["deepseek_v3_1", "deepseek_v31"] {
            let parsed = strict(name, &text);
            assert_eq!(parsed.content.as_deref(), Some("x"));
            assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", "{\"y\":\n2}")]);
        }
    }

    #[test]
    fn lenient_drops_a_blank_v3_name() {
        let text = format!("{B}{CB} {SEP}{{}}{CE}{CB}b{SEP}{{}}{CE}");
        assert_eq!(
            calls(&strict("deepseek_v3_1", &text)),
            vec![("", "{}"), ("b", "{}")]
        );
        let parsed = lenient("deepseek_v3_1", &text);
        assert_eq!(calls(&parsed), vec![("b", "{}")]);
        assert_eq!(parsed.diagnostics, diag(2, 1, 0, 0));
    }

    #[test]
    fn v4_unicode_dsml_call() {
        let text = "<｜DSML｜tool_calls_begin｜><｜DSML｜tool_call_begin｜>get_weather\n```json\n{\"city\": \"NYC\"}\n```<｜DSML｜tool_call_end｜><｜DSML｜tool_calls_end｜>";
        for name in ["deepseek_v4", "deepseek_dsml"] {
            let parsed = strict(name, text);
            // Content stops at the first *call*, so the calls-begin token stays in it.
            assert_eq!(
                parsed.content.as_deref(),
                Some("<｜DSML｜tool_calls_begin｜>")
            );
            assert_eq!(calls(&parsed), vec![("get_weather", r#"{"city": "NYC"}"#)]);
        }
    }

    #[test]
    fn v4_ascii_variant_with_bare_arguments() {
        let text = "pre < | DSML | tool_calls_begin >\n< | DSML | tool_call_begin > terminal\n{\"command\": \"ls\"}\n< | DSML | tool_call_end >";
        let parsed = strict("deepseek_v4", text);
        assert_eq!(
            parsed.content.as_deref(),
            Some("pre < | DSML | tool_calls_begin >")
        );
        assert_eq!(calls(&parsed), vec![("terminal", r#"{"command": "ls"}"#)]);
    }

    #[test]
    fn v4_empty_fence_gives_empty_object_and_nested_bare_braces_do_not_match() {
        let parsed = strict(
            "deepseek_v4",
            "<｜DSML｜tool_call_begin｜>f\n```json\n```<｜DSML｜tool_call_end｜>",
        );
        assert_eq!(calls(&parsed), vec![("f", "{}")]);
        assert_both_pass_through(
            "deepseek_v4",
            "<｜DSML｜tool_call_begin｜>f {\"a\": {\"b\": 1}}<｜DSML｜tool_call_end｜>",
        );
    }
}

mod kimi {
    use pretty_assertions::assert_eq;

    use super::*;

    const S: &str = "<|tool_calls_section_begin|>";
    const B: &str = "<|tool_call_begin|>";
    const A: &str = "<|tool_call_argument_begin|>";
    const E: &str = "<|tool_call_end|>";
    const SE: &str = "<|tool_calls_section_end|>";

    #[test]
    fn the_id_is_kept_and_the_name_comes_from_it() {
        let text = format!("{S}{B}functions.get_weather:0{A}{{\"city\":\"NYC\"}}{E}{SE}");
        let parsed = strict("kimi_k2", &text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("get_weather", r#"{"city":"NYC"}"#)]);
        assert_eq!(parsed.calls[0].id, "functions.get_weather:0");
    }

    #[test]
    fn multiple_calls_and_content_before_the_section() {
        let text = format!(
            "pre {S}{B}functions.a:0{A}{{}}{E}{B}functions.b:1{A} {{\"x\":1}} {E}{SE} after"
        );
        let parsed = strict("kimi_k2", &text);
        assert_eq!(parsed.content.as_deref(), Some("pre"));
        assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", r#"{"x":1}"#)]);
        assert_eq!(parsed.calls[1].id, "functions.b:1");
    }

    #[test]
    fn id_without_module_prefix_and_singular_section_token() {
        let text = format!("<|tool_call_section_begin|>{B}ping:0{A}{{}}{E}");
        let parsed = strict("kimi_k2", &text);
        assert_eq!(calls(&parsed), vec![("ping", "{}")]);
        assert_eq!(parsed.calls[0].id, "ping:0");
    }

    #[test]
    fn id_without_colon_digits_passes_through() {
        assert_both_pass_through("kimi_k2", &format!("{S}{B}functions.ping{A}{{}}{E}"));
        assert_both_pass_through("kimi_k2", &format!("{S} nothing inside"));
        assert_both_pass_through("kimi_k2", "plain");
    }

    #[test]
    fn arguments_cannot_run_into_the_next_call() {
        let text = format!("{S}{B}functions.a:0{A}{{\"x\": {B}functions.b:1{A}{{}}{E}");
        let parsed = strict("kimi_k2", &text);
        assert_eq!(calls(&parsed), vec![("b", "{}")]);
    }

    #[test]
    fn lenient_drops_a_blank_name() {
        let text = format!("{S}{B}functions.:0{A}{{}}{E}{B}functions.b:1{A}{{}}{E}");
        assert_eq!(strict("kimi_k2", &text).calls.len(), 2);
        let parsed = lenient("kimi_k2", &text);
        assert_eq!(calls(&parsed), vec![("b", "{}")]);
        assert_eq!(parsed.diagnostics, diag(2, 1, 0, 0));
    }
}

mod glm {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn glm45_call_with_string_and_deserialised_values() {
        let text = "thinking...\n<tool_call>get_weather\n<arg_key>city</arg_key><arg_value>NYC</arg_value>\n<arg_key>n</arg_key><arg_value>42</arg_value>\n<arg_key>items</arg_key><arg_value>[1, 2, 3]</arg_value>\n</tool_call>";
        let parsed = strict("glm45", text);
        assert_eq!(parsed.content.as_deref(), Some("thinking..."));
        assert_eq!(
            calls(&parsed),
            vec![(
                "get_weather",
                r#"{"city": "NYC", "n": 42, "items": [1, 2, 3]}"#
            )]
        );
        assert!(is_uuid8_id(&parsed.calls[0].id));
    }

    #[test]
    fn glm45_multiple_calls() {
        let text = "<tool_call>a\n</tool_call><tool_call>b\n<arg_key>x</arg_key><arg_value>1</arg_value></tool_call> done";
        let parsed = strict("glm45", text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("a", "{}"), ("b", r#"{"x": 1}"#)]);
    }

    #[test]
    fn glm45_needs_a_newline_after_the_name() {
        assert_both_pass_through("glm45", "<tool_call>f</tool_call>");
        assert_both_pass_through("glm45", "<tool_call>f\n<arg_key>x</arg_key>");
    }

    #[test]
    fn values_fall_back_from_json_to_python_literal_to_text() {
        let text = "<tool_call>f\n<arg_key>t</arg_key> <arg_value>(1, 2)</arg_value><arg_key>b</arg_key><arg_value>True</arg_value><arg_key>s</arg_key><arg_value>'q'</arg_value><arg_key>n</arg_key><arg_value>None</arg_value><arg_key>r</arg_key><arg_value> ls -la </arg_value><arg_key>d</arg_key><arg_value>{1: 2, '1': 3}</arg_value></tool_call>";
        assert_eq!(
            calls(&strict("glm45", text)),
            vec![(
                "f",
                r#"{"t": [1, 2], "b": true, "s": "q", "n": null, "r": "ls -la", "d": {"1": 2, "1": 3}}"#
            )]
        );
    }

    #[test]
    fn a_hermes_style_body_becomes_a_nameless_call_in_strict_only() {
        let text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(calls(&strict("glm45", text)), vec![("", "{}")]);
        let parsed = lenient("glm45", text);
        assert_pass_through(&parsed, text);
        assert_eq!(parsed.diagnostics, diag(1, 1, 0, 0));
    }

    #[test]
    fn glm47_name_newline_is_optional() {
        let text =
            "<tool_call>get_weather<arg_key>city</arg_key><arg_value>NYC</arg_value></tool_call>";
        assert_eq!(
            calls(&strict("glm47", text)),
            vec![("get_weather", r#"{"city": "NYC"}"#)]
        );
        assert_eq!(
            calls(&strict("glm47", "<tool_call>f</tool_call>")),
            vec![("f", "{}")]
        );
    }

    #[test]
    fn glm47_allows_literal_backslash_n_between_tags() {
        let text = "<tool_call>f\n<arg_key>x</arg_key>\\n<arg_value>1</arg_value>\n<arg_key>y</arg_key>\n\\n <arg_value>[1]</arg_value></tool_call>";
        assert_eq!(
            calls(&strict("glm47", text)),
            vec![("f", r#"{"x": 1, "y": [1]}"#)]
        );
        // glm45 does not: the pair is not read.
        assert_eq!(
            calls(&strict(
                "glm45",
                "<tool_call>f\n<arg_key>x</arg_key>\\n<arg_value>1</arg_value></tool_call>"
            )),
            vec![("f", "{}")]
        );
    }
}

mod qwen3_coder {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn single_function_with_a_string_parameter_and_a_29_char_id() {
        let text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nNYC\n</parameter>\n</function>\n</tool_call>";
        let parsed = strict("qwen3_coder", text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("get_weather", r#"{"city": "NYC"}"#)]);
        let id = &parsed.calls[0].id;
        assert_eq!(id.len(), 29);
        assert!(id.starts_with("call_") && id[5..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn values_convert_null_case_insensitively_then_json_then_literal() {
        let text = "pre <tool_call>\n<function=f>\n<parameter=a>1</parameter>\n<parameter=b>two</parameter>\n<parameter=c>NULL</parameter>\n<parameter=d>(1, 2)</parameter>\n<parameter=e>\"42\"</parameter>\n</function>\n</tool_call> done";
        let parsed = strict("qwen3_coder", text);
        assert_eq!(parsed.content.as_deref(), Some("pre"));
        assert_eq!(
            calls(&parsed),
            vec![(
                "f",
                r#"{"a": 1, "b": "two", "c": null, "d": [1, 2], "e": "42"}"#
            )]
        );
    }

    #[test]
    fn unterminated_parameters_end_at_the_next_parameter_or_function_end() {
        let text = "<function=f>\n<parameter=a>\nunterminated\n<parameter=b>\nx\n</function>";
        assert_eq!(
            calls(&strict("qwen3_coder", text)),
            vec![("f", r#"{"a": "unterminated", "b": "x"}"#)]
        );
    }

    #[test]
    fn a_truncated_call_keeps_its_last_parameter() {
        assert_eq!(
            calls(&strict(
                "qwen3_coder",
                "<tool_call>\n<function=f>\n<parameter=a>\ntruncated value\n"
            )),
            vec![("f", r#"{"a": "truncated value"}"#)]
        );
    }

    #[test]
    fn whitespace_only_prefix_gives_empty_content_not_none() {
        let parsed = strict("qwen3_coder", "  <function=f>x</function>");
        assert_eq!(parsed.content.as_deref(), Some(""));
        assert_eq!(calls(&parsed), vec![("f", "{}")]);
    }

    #[test]
    fn function_without_closing_angle_bracket_is_skipped() {
        assert_both_pass_through("qwen3_coder", "<function=nogt");
        assert_both_pass_through("qwen3_coder", "plain response");
    }

    #[test]
    fn lenient_drops_an_empty_function_name() {
        let text = "<function=>\n<parameter=a>1</parameter>\n</function>";
        assert_eq!(
            calls(&strict("qwen3_coder", text)),
            vec![("", r#"{"a": 1}"#)]
        );
        let parsed = lenient("qwen3_coder", text);
        assert_pass_through(&parsed, text);
        assert_eq!(parsed.diagnostics, diag(1, 1, 0, 0));
    }
}

mod custom_xml {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn tool_use_block_with_json_arguments() {
        let text = "<tool_use>\n<parameter=tool_name>web_search</parameter>\n<parameter=arguments>{\"query\": \"x\"}</parameter>\n</tool_use>";
        let parsed = strict("custom_xml", text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("web_search", r#"{"query": "x"}"#)]);
        assert!(is_uuid8_id(&parsed.calls[0].id));
    }

    #[test]
    fn non_json_arguments_become_a_value_object_and_content_precedes_the_tag() {
        let text = "Pre text <tool_call>\n<tool_use>\n<parameter=tool_name>a</parameter>\n<parameter=arguments>not json</parameter>\n</tool_use>\n</tool_call>";
        let parsed = strict("custom_xml", text);
        assert_eq!(parsed.content.as_deref(), Some("Pre text"));
        assert_eq!(calls(&parsed), vec![("a", r#"{"value": "not json"}"#)]);
    }

    #[test]
    fn invalid_object_arguments_become_empty_and_duplicates_are_removed() {
        let text = "<tool_use><parameter=tool_name>a</parameter><parameter=arguments>{bad</parameter></tool_use><tool_use><parameter=tool_name>a</parameter><parameter=arguments>{}</parameter></tool_use><tool_use><parameter=tool_name>a</parameter></tool_use>";
        assert_eq!(calls(&strict("custom_xml", text)), vec![("a", "{}")]);
    }

    #[test]
    fn json_string_arguments_are_double_encoded_in_strict_only() {
        let text = "<tool_use><parameter=tool_name>a</parameter><parameter=arguments>\"ls\"</parameter></tool_use>";
        assert_eq!(calls(&strict("custom_xml", text)), vec![("a", r#""ls""#)]);
        let parsed = lenient("custom_xml", text);
        assert_eq!(calls(&parsed), vec![("a", "ls")]);
        assert_eq!(parsed.diagnostics, diag(1, 0, 0, 1));
    }

    #[test]
    fn content_is_none_when_no_opening_tag_is_within_200_characters() {
        let text = format!(
            "<tool_use>{}<parameter=tool_name>a</parameter></tool_use>",
            "x".repeat(250)
        );
        let parsed = strict("custom_xml", &text);
        assert_eq!(parsed.content, None);
        assert_eq!(calls(&parsed), vec![("a", "{}")]);
    }

    #[test]
    fn without_tool_name_or_tags_the_text_passes_through() {
        assert_both_pass_through("custom_xml", "<tool_use>nothing</tool_use>");
        assert_both_pass_through("custom_xml", "<parameter=tool_name>a</parameter>");
    }
}

mod auto {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn xml_parameters_win_and_markup_is_removed_from_content() {
        let text = "Sure. <tool_use><parameter=tool_name>a</parameter><parameter=arguments>plain</parameter></tool_use> after";
        let parsed = strict("auto", text);
        assert_eq!(parsed.content.as_deref(), Some("Sure.  after"));
        assert_eq!(calls(&parsed), vec![("a", r#"{"value": "plain"}"#)]);
    }

    #[test]
    fn raw_json_with_escaped_string_arguments() {
        let text = r#"text {"name": "terminal", "arguments": "{\"command\": \"ls\"}"} more"#;
        let parsed = strict("auto", text);
        assert_eq!(parsed.content.as_deref(), Some("text  more"));
        assert_eq!(calls(&parsed), vec![("terminal", r#"{"command": "ls"}"#)]);
    }

    #[test]
    fn single_quoted_raw_json_is_found_but_not_removed_from_content() {
        let text = r#"text {'name': 'terminal', 'arguments': '{"command": "ls"}'} more"#;
        let parsed = strict("auto", text);
        assert_eq!(parsed.content.as_deref(), Some(text));
        assert_eq!(calls(&parsed), vec![("terminal", r#"{"command": "ls"}"#)]);
    }

    #[test]
    fn fenced_shell_blocks_become_ascii_escaped_terminal_calls() {
        let text = "Run this:\n```bash\nls -la\n```\nand\n```\necho é\n```";
        let parsed = strict("auto", text);
        assert_eq!(parsed.content.as_deref(), Some("Run this:\n\nand"));
        assert_eq!(
            calls(&parsed),
            vec![
                ("terminal", r#"{"command": "ls -la"}"#),
                ("terminal", r#"{"command": "echo \u00e9"}"#)
            ]
        );
    }

    #[test]
    fn a_closing_fence_can_open_a_bare_block() {
        let text = "```python\nprint(1)\n```\nSome text\n```";
        assert_eq!(
            calls(&strict("auto", text)),
            vec![("terminal", r#"{"command": "Some text"}"#)]
        );
    }

    #[test]
    fn empty_or_plain_text_passes_through() {
        assert_both_pass_through("auto", "");
        assert_both_pass_through("auto", "nothing here");
    }
}
