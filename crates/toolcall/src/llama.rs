//! `llama3_json` / `llama4_json`: bare JSON call objects anywhere in the text, as MAIN04's
//! `llama_parser.py`.
//!
//! Reference behaviour (strict):
//! - every `{` is tried with `raw_decode`; a brace inside (or immediately after: `start <=
//!   end_index`) the previously decoded object is skipped, so a call nested inside another object
//!   is not found, and of two adjacent objects `{…}{…}` only the first is read;
//! - an object needs a truthy `name` and `arguments` (else `parameters`) that is not null:
//!   `{"name":"c"}` is skipped; a non-string name is skipped (pydantic's `ValidationError` is a
//!   `ValueError`, which the per-object `except` catches);
//! - string arguments are passed raw (they may not be JSON); anything else is `json.dumps`ed;
//! - content is the text before `<|python_tag|>` if present, else before the *first `{` in the
//!   text* (even one that is not a call), stripped; `None` only when that index is 0, so a
//!   whitespace-only prefix gives `Some("")`;
//! - a `RecursionError` (nesting beyond the decoder's limit) escapes the per-object `except` and
//!   passes the whole text through.
//!
//! Lenient mode drops (and counts) objects that have a `name` key but are not valid calls, keeps
//! the calls found before a too-deep object instead of giving up, and repairs a call cut off by the
//! end of the text (it must keep a complete string `name` and an `arguments`/`parameters` key).

use crate::common::{Collector, content_before, make_uuid_id, normalize_arguments};
use crate::lenient::{Repair, try_repair};
use crate::pyjson::{JsonError, PyValue, raw_decode};
use crate::{Mode, Parsed, Parser, ToolCall};

const BOT_TOKEN: &str = "<|python_tag|>";

#[derive(Debug)]
pub(crate) struct Llama {
    name: &'static str,
}

pub(crate) static LLAMA3_JSON: Llama = Llama {
    name: "llama3_json",
};
pub(crate) static LLAMA4_JSON: Llama = Llama {
    name: "llama4_json",
};

/// One decoded object as the reference sees it.
enum Object {
    Call(ToolCall),
    /// Has a `name` key but fails the reference's checks.
    Invalid,
    /// No `name` key: not a call attempt at all.
    NotACall,
}

fn classify(value: &PyValue) -> Object {
    let Some(name) = value.get("name") else {
        return Object::NotACall;
    };
    let arguments = match value.get("arguments") {
        Some(args) => Some(args),
        None => value.get("parameters"),
    };
    let (PyValue::Str(name), Some(arguments)) = (name, arguments) else {
        return Object::Invalid;
    };
    if name.is_empty() || *arguments == PyValue::None {
        return Object::Invalid;
    }
    Object::Call(ToolCall {
        id: make_uuid_id(),
        name: name.clone(),
        arguments: normalize_arguments(arguments),
    })
}

impl Parser for Llama {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(BOT_TOKEN) && !text.contains('{') {
            return Parsed::pass_through(text);
        }
        let mut out = Collector::new(mode);
        let mut end_index: Option<usize> = None;
        let mut tried_repair = false;
        for (start, _) in text.match_indices('{') {
            if end_index.is_some_and(|end| start <= end) {
                continue;
            }
            match raw_decode(text, start) {
                Ok((value, end)) => {
                    end_index = Some(end);
                    match classify(&value) {
                        Object::Call(call) => out.accept(call),
                        Object::Invalid if out.lenient() => out.drop_malformed(),
                        Object::Invalid | Object::NotACall => {}
                    }
                }
                Err(JsonError::Recursion) if !out.lenient() => return Parsed::pass_through(text),
                // Every later brace of a structure this deep is inside it: lenient keeps what it
                // found instead of decoding it again from each of them.
                Err(JsonError::Recursion) => break,
                Err(_) if out.lenient() && !tried_repair => {
                    // Only a cut-off object reaching the end of the text can be repaired, and the
                    // first such brace is the outermost: the braces inside it would only give
                    // fragments (and re-scanning from each would be quadratic).
                    let fragment = text.get(start..).unwrap_or_default();
                    let repaired = match try_repair(fragment, Some("name")) {
                        Repair::NotTruncated => continue,
                        Repair::Unrecoverable => {
                            tried_repair = true;
                            continue;
                        }
                        Repair::Repaired(repaired) => repaired,
                    };
                    tried_repair = true;
                    let value = repaired.value;
                    if value.get("name").is_none() {
                        continue;
                    }
                    // `classify` also demands the arguments, so a cut before them is dropped.
                    match classify(&value) {
                        Object::Call(call) => out.accept_recovered(call),
                        Object::Invalid | Object::NotACall => out.drop_malformed(),
                    }
                    break;
                }
                Err(_) => {}
            }
        }
        out.finish(text, || {
            let first = text.find(BOT_TOKEN).or_else(|| text.find('{'))?;
            if first == 0 {
                return None;
            }
            // The reference strips but does not map an empty prefix to None here.
            Some(content_before(text, first).unwrap_or_default())
        })
    }
}
