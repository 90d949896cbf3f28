//! `auto`: best-effort detection for local models that emit no tool-call markup, as UP's
//! `auto_parser.py` (7ddcede8).
//!
//! Reference behaviour (strict): the first of these that finds a call wins (an exception inside
//! one moves on to the next):
//! 1. XML parameters, as `custom_xml` (needs `<parameter=`), except that non-`{` arguments always
//!    become `{"value": text}`;
//! 2. raw JSON `{"name": "N", "arguments": "<escaped JSON string>"}` (or the same with single
//!    quotes when no double-quoted one exists): `\"` is unescaped and the result must be JSON; the
//!    arguments are that unescaped text;
//! 3. fenced ```bash/```sh/```shell (or bare ```) blocks with a newline after the fence: each
//!    non-blank block becomes `terminal` with `json.dumps({"command": …})` (ASCII-escaped).
//!
//! Unlike the other parsers, `content` is the whole text with the recognised markup removed
//! (tags and parameters; the double-quoted JSON pattern — even when the single-quoted one
//! matched; the fenced blocks), stripped, `None` if empty. An empty text passes through.
//!
//! Lenient mode only drops (and counts) calls with a blank name.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::common::{Collector, PY_WS, literal_regex, make_uuid_id, py_strip};
use crate::custom_xml::{Interner, PARAM, call_blocks};
use crate::pyjson::{JsonError, PyValue, loads};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

static JSON_TOOL: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r#"\{{{PY_WS}*"name"{PY_WS}*:{PY_WS}*"([^"]+)"{PY_WS}*,{PY_WS}*"arguments"{PY_WS}*:{PY_WS}*"((?:[^"\\]|\\.)*)"{PY_WS}*\}}"#
    ))
});

static JSON_TOOL_SINGLE: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r#"\{{{PY_WS}*'name'{PY_WS}*:{PY_WS}*'([^']+)'{PY_WS}*,{PY_WS}*'arguments'{PY_WS}*:{PY_WS}*'((?:[^'\\]|\\.)*)'{PY_WS}*\}}"#
    ))
});

static CODE_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(&format!(r"(?s)```(?:bash|shell|sh)?{PY_WS}*\n(.*?)\n```")));

#[derive(Debug)]
pub(crate) struct Auto;

pub(crate) static AUTO: Auto = Auto;

/// Raised inside one sub-parser: the reference moves on to the next one.
struct Raised;

/// `(name, arguments)` pairs a sub-parser found, `None` when it found nothing.
type Found = Option<Vec<(String, String)>>;

fn xml_params(text: &str) -> Result<Found, Raised> {
    if !text.contains("<parameter=") {
        return Ok(None);
    }
    let Some(call_blocks) = call_blocks(text) else {
        return Ok(None);
    };
    let mut calls = Vec::new();
    // Decoded once per distinct arguments match: `(dedup id, arguments text)`.
    let mut decoded: HashMap<Option<usize>, (usize, String)> = HashMap::new();
    let mut interner = Interner::default();
    let mut name_ids: HashMap<usize, usize> = HashMap::new();
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    for block in &call_blocks.blocks {
        let Some((name_index, name)) = block.tool_name else {
            continue;
        };
        let args_index = block.arguments.map(|(index, _)| index);
        let (dedup, arguments) = match decoded.entry(args_index) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let args = block.arguments.map_or("{}", |(_, text)| text);
                let value = if args.starts_with('{') {
                    match loads(args) {
                        Ok(value) => value,
                        Err(JsonError::Decode { .. }) => PyValue::Dict(Vec::new()),
                        Err(_) => return Err(Raised),
                    }
                } else {
                    PyValue::Dict(vec![("value".to_owned(), PyValue::Str(args.to_owned()))])
                };
                slot.insert((
                    interner.id(dumps(&value, true, true)),
                    dumps(&value, false, false),
                ))
            }
        };
        let name_id = *name_ids
            .entry(name_index)
            .or_insert_with(|| interner.id(name.to_owned()));
        if seen.insert((name_id, *dedup)) {
            calls.push((name.to_owned(), arguments.clone()));
        }
    }
    Ok((!calls.is_empty()).then_some(calls))
}

fn raw_json(text: &str) -> Result<Found, Raised> {
    let mut matches: Vec<(String, String)> = JSON_TOOL
        .captures_iter(text)
        .map(|caps| (group(&caps, 1), group(&caps, 2)))
        .collect();
    if matches.is_empty() {
        matches = JSON_TOOL_SINGLE
            .captures_iter(text)
            .map(|caps| (group(&caps, 1), group(&caps, 2)))
            .collect();
    }
    let mut calls = Vec::new();
    for (name, args) in matches {
        let args = args.replace("\\\"", "\"");
        match loads(&args) {
            Ok(_) => calls.push((name, args)),
            Err(JsonError::Decode { .. }) => {}
            Err(_) => return Err(Raised),
        }
    }
    Ok((!calls.is_empty()).then_some(calls))
}

fn code_blocks(text: &str) -> Found {
    let calls: Vec<(String, String)> = CODE_BLOCK
        .captures_iter(text)
        .map(|caps| group(&caps, 1))
        .filter_map(|cmd| {
            let cmd = py_strip(&cmd);
            (!cmd.is_empty()).then(|| {
                let args =
                    PyValue::Dict(vec![("command".to_owned(), PyValue::Str(cmd.to_owned()))]);
                ("terminal".to_owned(), dumps(&args, true, false))
            })
        })
        .collect();
    (!calls.is_empty()).then_some(calls)
}

fn group(caps: &regex::Captures<'_>, i: usize) -> String {
    caps.get(i).map_or("", |m| m.as_str()).to_owned()
}

fn stripped_or_none(text: &str) -> Option<String> {
    let stripped = py_strip(text);
    (!stripped.is_empty()).then(|| stripped.to_owned())
}

impl Parser for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if text.is_empty() {
            return Parsed::pass_through(text);
        }
        let (calls, content) = if let Ok(Some(calls)) = xml_params(text) {
            let mut cleaned = text.to_owned();
            for tag in ["<tool_use>", "</tool_use>", "<tool_call>", "</tool_call>"] {
                cleaned = cleaned.replace(tag, "");
            }
            let cleaned = PARAM.replace_all(&cleaned, "");
            (calls, stripped_or_none(&cleaned))
        } else if let Ok(Some(calls)) = raw_json(text) {
            (calls, stripped_or_none(&JSON_TOOL.replace_all(text, "")))
        } else if let Some(calls) = code_blocks(text) {
            (calls, stripped_or_none(&CODE_BLOCK.replace_all(text, "")))
        } else {
            return Parsed::pass_through(text);
        };
        let mut out = Collector::new(mode);
        for (name, arguments) in calls {
            out.accept(ToolCall {
                id: make_uuid_id(),
                name,
                arguments,
            });
        }
        out.finish(text, || content)
    }
}
