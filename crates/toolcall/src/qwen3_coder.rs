//! `qwen3_coder`: `<function=NAME>` with `<parameter=K>V</parameter>` children, optionally inside
//! `<tool_call>`, as MAIN04's `qwen3_coder_parser.py`.
//!
//! Reference behaviour (strict):
//! - triggers on `<function=`; blocks are `<tool_call>(.*?)</tool_call>|<tool_call>(.*?)$`, or the
//!   whole text when there is none; functions are `<function=(.*?)</function>|<function=(.*)$`.
//!   Python's `$` also matches before a final newline, so an unclosed block stops there;
//! - the name is the text before the first `>` (stripped; a function without `>` is skipped);
//! - a parameter ends at `</parameter>`, the next `<parameter=`, `</function>` or the end of the
//!   text, so unterminated and truncated parameters are kept; a parameter without `>` is skipped;
//!   one leading and one trailing `\n` are removed from the value;
//! - values: `null` in any case → `None`, then `json.loads`, then `ast.literal_eval`, then the
//!   stripped string. The schema types are not used (despite the reference's docstring);
//! - ids are `call_` + 24 hex (29 characters);
//! - content is the text before `<tool_call>` (else before `<function=`), stripped, `None` only when
//!   that index is 0 — a whitespace-only prefix gives `Some("")`;
//! - a 4300+ digit integer is a `ValueError` that skips just that call; too-deep nesting is a
//!   `RecursionError` that passes the whole text through.
//!
//! Lenient mode drops (and counts) a call with a blank name or such an error instead.

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{Collector, NextFind, content_before, literal_regex, make_hex_id, py_strip};
use crate::literal::literal_eval;
use crate::pyjson::{JsonError, PyValue, loads};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

const START: &str = "<tool_call>";
const FUNCTION_PREFIX: &str = "<function=";
const PARAMETER_PREFIX: &str = "<parameter=";

// `(.*?)\n?\z` is Python's `(.*?)$`: `$` also matches just before a final newline.
static TOOL_CALL_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<tool_call>(.*?)</tool_call>|<tool_call>(.*?)\n?\z"));

static FUNCTION_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<function=(.*?)</function>|<function=(.*)\z"));

#[derive(Debug)]
pub(crate) struct Qwen3Coder;

pub(crate) static QWEN3_CODER: Qwen3Coder = Qwen3Coder;

/// Why one function block gave no call.
enum Skip {
    /// `_parse_function_call` returned `None` (no `>`, or a `ValueError`).
    Call,
    /// An exception escaping `parse`'s `try` (a `RecursionError`).
    Parse,
}

/// `_try_convert_value`.
fn convert_value(value: &str) -> Result<PyValue, JsonError> {
    let stripped = py_strip(value);
    if stripped.eq_ignore_ascii_case("null") {
        return Ok(PyValue::None);
    }
    match loads(stripped) {
        Ok(decoded) => Ok(decoded),
        Err(JsonError::Decode { .. }) => {
            Ok(literal_eval(stripped).unwrap_or_else(|| PyValue::Str(stripped.to_owned())))
        }
        Err(other) => Err(other),
    }
}

/// `PARAMETER_REGEX.findall`: `<parameter=(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|$)`
/// (DOTALL), written out because the `regex` crate has no look-ahead.
fn parameter_bodies(params: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut opens = NextFind::new(PARAMETER_PREFIX);
    let mut closes = NextFind::new("</parameter>");
    let mut next_opens = NextFind::new(PARAMETER_PREFIX);
    let mut function_ends = NextFind::new("</function>");
    let mut pos = 0;
    while let Some(found) = opens.at(params, pos) {
        let start = found + PARAMETER_PREFIX.len();
        // `$` matches at the end, or before a final newline.
        let dollar = if params.ends_with('\n') && params.len() > start {
            params.len() - 1
        } else {
            params.len()
        };
        let close = closes.at(params, start);
        let end = [
            close,
            next_opens.at(params, start),
            function_ends.at(params, start),
            Some(dollar),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(params.len());
        bodies.push(params.get(start..end).unwrap_or_default());
        // Only `</parameter>` is consumed; the look-aheads and `$` leave the cursor at `end`.
        pos = if close == Some(end) {
            end + "</parameter>".len()
        } else {
            end
        };
    }
    bodies
}

fn function_call(function: &str) -> Result<ToolCall, Skip> {
    let gt = function.find('>').ok_or(Skip::Call)?;
    let name = py_strip(function.get(..gt).unwrap_or_default()).to_owned();
    let params = function.get(gt + 1..).unwrap_or_default();
    let mut pairs: Vec<(String, PyValue)> = Vec::new();
    for body in parameter_bodies(params) {
        let Some(eq) = body.find('>') else {
            continue;
        };
        let key = py_strip(body.get(..eq).unwrap_or_default()).to_owned();
        let mut value = body.get(eq + 1..).unwrap_or_default();
        value = value.strip_prefix('\n').unwrap_or(value);
        value = value.strip_suffix('\n').unwrap_or(value);
        let value = match convert_value(value) {
            Ok(value) => value,
            Err(JsonError::Recursion) => return Err(Skip::Parse),
            Err(_) => return Err(Skip::Call),
        };
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => pairs.push((key, value)),
        }
    }
    Ok(ToolCall {
        id: format!("call_{}", make_hex_id(24)),
        name,
        arguments: dumps(&PyValue::Dict(pairs), false, false),
    })
}

impl Parser for Qwen3Coder {
    fn name(&self) -> &'static str {
        "qwen3_coder"
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(FUNCTION_PREFIX) {
            return Parsed::pass_through(text);
        }
        let mut blocks: Vec<&str> = TOOL_CALL_BLOCK
            .captures_iter(text)
            .map(|caps| closed_or_open(&caps))
            .collect();
        if blocks.is_empty() {
            blocks.push(text);
        }
        let functions: Vec<&str> = blocks
            .iter()
            .flat_map(|block| FUNCTION_BLOCK.captures_iter(block))
            .map(|caps| closed_or_open(&caps))
            .collect();
        let mut out = Collector::new(mode);
        for function in functions {
            match function_call(function) {
                Ok(call) => out.accept(call),
                Err(_) if out.lenient() => out.drop_malformed(),
                Err(Skip::Call) => {}
                Err(Skip::Parse) => return Parsed::pass_through(text),
            }
        }
        out.finish(text, || {
            let first = text.find(START).or_else(|| text.find(FUNCTION_PREFIX))?;
            if first == 0 {
                return None;
            }
            // The reference strips but does not map an empty prefix to None here.
            Some(content_before(text, first).unwrap_or_default())
        })
    }
}

/// The body of a `closed|open` alternation: group 1 (the closed form) when it matched
/// something, else group 2 (an unterminated block running to the end), as the reference's
/// `match[0] if match[0] else match[1]`.
fn closed_or_open<'t>(caps: &regex::Captures<'t>) -> &'t str {
    caps.get(1)
        .filter(|m| !m.as_str().is_empty())
        .or_else(|| caps.get(2))
        .map_or("", |m| m.as_str())
}
