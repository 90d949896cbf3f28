//! `glm45` and `glm47`: `<tool_call>NAME` followed by `<arg_key>K</arg_key><arg_value>V</arg_value>`
//! pairs, as MAIN04's `glm45_parser.py` and `glm47_parser.py` (a subclass with other patterns).
//!
//! Reference behaviour (strict):
//! - only closed `<tool_call>.*?</tool_call>` blocks count; content is the text before the first
//!   `<tool_call>`;
//! - glm45 reads each block with `<tool_call>([^\n]*)\n(.*)</tool_call>`, so the name **must** be
//!   followed by a newline (`<tool_call>f</tool_call>` is skipped, and a text with only such blocks
//!   passes through); glm47 uses `<tool_call>(.*?)(<arg_key>.*?)?</tool_call>`, so the newline is
//!   optional and the name runs to the first `<arg_key>`;
//! - pairs are `<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>`; glm47 also allows
//!   literal `\n` (backslash, n) between the tags;
//! - keys are stripped; values are stripped, then `json.loads`, then `ast.literal_eval`
//!   (`(1, 2)` → `[1, 2]`, `True` → `true`), then kept as the string; the call's arguments are
//!   `json.dumps(dict, ensure_ascii=False)` (a repeated key keeps its first position);
//! - the name is not checked: a hermes-style `<tool_call>\n{…}\n</tool_call>` becomes a call with
//!   an empty name and `{}`;
//! - errors outside those `except` clauses (nesting too deep, a 4300+ digit integer) pass the whole
//!   text through.
//!
//! Lenient mode drops (and counts) a call with a blank name or such an error instead.

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{
    Collector, PY_WS, literal_regex, make_uuid_id, py_strip, split_content_from_first_marker,
};
use crate::literal::literal_eval;
use crate::pyjson::{JsonError, PyValue, loads};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

const START: &str = "<tool_call>";

static CALL_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<tool_call>.*?</tool_call>"));

static GLM45_DETAIL: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<tool_call>([^\n]*)\n(.*)</tool_call>"));

static GLM47_DETAIL: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<tool_call>(.*?)(<arg_key>.*?)?</tool_call>"));

static GLM45_ARG: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r"(?s)<arg_key>(.*?)</arg_key>{PY_WS}*<arg_value>(.*?)</arg_value>"
    ))
});

static GLM47_ARG: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r"(?s)<arg_key>(.*?)</arg_key>(?:\\n|{PY_WS})*<arg_value>(.*?)</arg_value>"
    ))
});

#[derive(Debug)]
pub(crate) struct Glm {
    name: &'static str,
    detail: &'static LazyLock<Regex>,
    arg: &'static LazyLock<Regex>,
}

pub(crate) static GLM45: Glm = Glm {
    name: "glm45",
    detail: &GLM45_DETAIL,
    arg: &GLM45_ARG,
};

pub(crate) static GLM47: Glm = Glm {
    name: "glm47",
    detail: &GLM47_DETAIL,
    arg: &GLM47_ARG,
};

/// `_deserialize_value`: JSON, then a Python literal, then the text itself. `Err` is an exception
/// those `except` clauses do not catch.
pub(crate) fn deserialize_value(value: &str) -> Result<PyValue, JsonError> {
    match loads(value) {
        Ok(decoded) => Ok(decoded),
        Err(JsonError::Decode { .. }) => {
            Ok(literal_eval(value).unwrap_or_else(|| PyValue::Str(value.to_owned())))
        }
        Err(other) => Err(other),
    }
}

impl Glm {
    /// One block's call, `Err` when the reference would raise.
    fn call(&self, block: &str) -> Result<Option<ToolCall>, JsonError> {
        let Some(detail) = self.detail.captures(block) else {
            return Ok(None);
        };
        let name = py_strip(detail.get(1).map_or("", |m| m.as_str())).to_owned();
        let args_raw = detail.get(2).map_or("", |m| m.as_str());
        let mut pairs: Vec<(String, PyValue)> = Vec::new();
        for caps in self.arg.captures_iter(args_raw) {
            let key = py_strip(caps.get(1).map_or("", |m| m.as_str())).to_owned();
            let value = deserialize_value(py_strip(caps.get(2).map_or("", |m| m.as_str())))?;
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => pairs.push((key, value)),
            }
        }
        Ok(Some(ToolCall {
            id: make_uuid_id(),
            name,
            arguments: dumps(&PyValue::Dict(pairs), false, false),
        }))
    }
}

impl Parser for Glm {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(START) {
            return Parsed::pass_through(text);
        }
        let mut out = Collector::new(mode);
        for block in CALL_BLOCK.find_iter(text) {
            match self.call(block.as_str()) {
                Ok(Some(call)) => out.accept(call),
                Ok(None) => {}
                Err(_) if out.lenient() => out.drop_malformed(),
                Err(_) => return Parsed::pass_through(text),
            }
        }
        out.finish(text, || split_content_from_first_marker(text, START).0)
    }
}
