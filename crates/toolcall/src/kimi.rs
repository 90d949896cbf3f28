//! `kimi_k2`: `<|tool_call_begin|>ID<|tool_call_argument_begin|>ARGS<|tool_call_end|>` inside a
//! tool-calls section, as MAIN04's `kimi_k2_parser.py`.
//!
//! Reference behaviour (strict):
//! - needs `<|tool_calls_section_begin|>` or the singular `<|tool_call_section_begin|>`; content
//!   is the stripped text before the earliest of them;
//! - a call matches `<\|tool_call_begin\|>\s*(?P<id>[^<]+:\d+)\s*<\|tool_call_argument_begin\|>\s*
//!   (?P<args>(?:(?!<\|tool_call_begin\|>).)*?)\s*<\|tool_call_end\|>` (DOTALL); an id without
//!   `:digits` does not match, so the text passes through;
//! - the id is kept as the call id (`functions.get_weather:0`); the name is the id up to the first
//!   `:`, after the last `.` (`ping:0` → `ping`); the arguments are the raw stripped text.
//!
//! The Rust `regex` crate has no look-ahead, so the head of the pattern is a regex and the
//! arguments part is scanned by hand with the same leftmost, lazy semantics.
//!
//! Lenient mode only drops (and counts) calls with a blank name (`functions.:0`).

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{Collector, NextFind, PY_WS, is_py_space, literal_regex, py_strip};
use crate::{Mode, Parsed, Parser, ToolCall};

const SECTION_BEGINS: [&str; 2] = [
    "<|tool_calls_section_begin|>",
    "<|tool_call_section_begin|>",
];
const CALL_BEGIN: &str = "<|tool_call_begin|>";
const CALL_END: &str = "<|tool_call_end|>";

static CALL_HEAD: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r"<\|tool_call_begin\|>{PY_WS}*(?P<id>[^<]+:\d+){PY_WS}*<\|tool_call_argument_begin\|>{PY_WS}*"
    ))
});

#[derive(Debug)]
pub(crate) struct KimiK2;

pub(crate) static KIMI_K2: KimiK2 = KimiK2;

/// The end of `(?:(?!BEGIN).)*?\s*END` starting at `from`, given the first end token at or
/// after `from`: the arguments' end and the match's end, or `None` when a `<|tool_call_begin|>`
/// comes first.
fn arguments_end(text: &str, from: usize, end_at: usize) -> Option<(usize, usize)> {
    // The lazy loop stops at the first position from which `\s*END` matches: the start of the
    // whitespace run before the first end token.
    let before_end = text.get(from..end_at)?;
    let args_end = from + before_end.trim_end_matches(is_py_space).len();
    // No begin token may start anywhere the loop stepped over.
    let stepped = text.get(from..args_end)?;
    (!stepped.contains(CALL_BEGIN)).then_some((args_end, end_at + CALL_END.len()))
}

impl Parser for KimiK2 {
    fn name(&self) -> &'static str {
        "kimi_k2"
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        let Some(section) = SECTION_BEGINS.iter().filter_map(|t| text.find(t)).min() else {
            return Parsed::pass_through(text);
        };
        let mut out = Collector::new(mode);
        let mut ends = NextFind::new(CALL_END);
        let mut pos = 0;
        while let Some(caps) = CALL_HEAD.captures_at(text, pos) {
            let (Some(head), Some(id)) = (caps.get(0), caps.name("id")) else {
                break;
            };
            // Without an end token after this head, no later head can match either.
            let Some(end_at) = ends.at(text, head.end()) else {
                break;
            };
            match arguments_end(text, head.end(), end_at) {
                Some((args_end, match_end)) => {
                    let id = id.as_str();
                    let before_colon = id.split(':').next().unwrap_or_default();
                    let name = before_colon.rsplit('.').next().unwrap_or_default();
                    out.accept(ToolCall {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        arguments: py_strip(text.get(head.end()..args_end).unwrap_or_default())
                            .to_owned(),
                    });
                    pos = match_end;
                }
                // No match from this begin token: try from the next character, as `findall` does.
                None => {
                    pos = head.start()
                        + text
                            .get(head.start()..)
                            .and_then(|s| s.chars().next())
                            .map_or(1, char::len_utf8);
                }
            }
        }
        out.finish(text, || {
            let prefix = py_strip(text.get(..section).unwrap_or_default());
            (!prefix.is_empty()).then(|| prefix.to_owned())
        })
    }
}
