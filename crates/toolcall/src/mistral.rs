//! `mistral`: `[TOOL_CALLS]` followed by a JSON array/object (pre-v11) or by `name{args}` chunks
//! (v11+), as MAIN04's `mistral_parser.py`.
//!
//! Reference behaviour (strict):
//! - the text is split on `[TOOL_CALLS]`; content is the stripped first part (`None` if empty);
//! - the format is pre-v11 iff the first chunk, stripped, starts with `[` or `{`;
//! - v11+: each stripped chunk containing `{` gives a call named by the text before its first `{`
//!   (stripped, possibly empty) with the rest as arguments, re-serialised if it is JSON and kept
//!   raw otherwise (`f{bad json` → `{bad json`); chunks without `{` are skipped. So
//!   `[TOOL_CALLS] junk {…}` is a v11 call named `junk`;
//! - pre-v11: `json.loads` of the first chunk only (later `[TOOL_CALLS]` chunks are ignored); a
//!   dict is one call, a list many; an element without `name` is skipped (MAIN04; V08 passed the
//!   text through); dict arguments are dumped, strings passed through, anything else (or a
//!   non-string name, or a non-dict element the membership test raises on) fails the whole parse;
//! - if that JSON is invalid, MAIN04 scans it with `raw_decode` at every character (PR used a
//!   regex) and takes each decoded dict that has a `name`. A list decoded there is skipped whole;
//! - errors that are not `JSONDecodeError` (nesting too deep, a 4300+ digit integer) escape every
//!   `except` and pass the whole text through.
//!
//! Lenient mode drops (and counts) malformed elements instead of failing, and repairs a cut-off
//! ending: a pre-v11 array/object that stops mid-way is closed (its last element counts as
//! recovered if the cut was inside it and it still has a complete `name` and an `arguments` key),
//! and a last v11 chunk whose arguments stop mid-way is closed and re-serialised.

use crate::common::{Collector, NameCheck, make_mistral_id, name_check, py_strip};
use crate::lenient::{Repaired, repair_truncated};
use crate::pyjson::{JsonError, PyValue, loads, raw_decode};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

const BOT_TOKEN: &str = "[TOOL_CALLS]";

#[derive(Debug)]
pub(crate) struct Mistral;

pub(crate) static MISTRAL: Mistral = Mistral;

/// The whole strict parse gives up (the reference's outer `except Exception`).
struct Fail;

/// One pre-v11 element as the reference judges it: `Ok(None)` is a skip.
fn element_call(element: &PyValue) -> Result<Option<ToolCall>, Fail> {
    match name_check(element) {
        NameCheck::Present => {}
        NameCheck::Skip => return Ok(None),
        NameCheck::Raises => return Err(Fail),
    }
    let Some(PyValue::Str(name)) = element.get("name") else {
        return Err(Fail);
    };
    let arguments = match element.get("arguments") {
        None => "{}".to_owned(),
        Some(dict @ PyValue::Dict(_)) => dumps(dict, false, false),
        Some(PyValue::Str(s)) => s.clone(),
        // pydantic rejects a non-string `Function.arguments`.
        Some(_) => return Err(Fail),
    };
    Ok(Some(ToolCall {
        id: make_mistral_id(),
        name: name.clone(),
        arguments,
    }))
}

/// Takes one element: strict fails the parse, lenient drops it.
fn take(out: &mut Collector, element: &PyValue) -> Result<(), Fail> {
    match element_call(element) {
        Ok(Some(call)) => out.accept(call),
        Ok(None) if out.lenient() => out.drop_malformed(),
        Ok(None) => {}
        Err(Fail) if out.lenient() => out.drop_malformed(),
        Err(Fail) => return Err(Fail),
    }
    Ok(())
}

fn elements(value: &PyValue) -> &[PyValue] {
    match value {
        PyValue::List(items) => items,
        other => std::slice::from_ref(other),
    }
}

fn parse_v11(out: &mut Collector, chunks: &[&str]) -> Result<(), Fail> {
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.iter().enumerate() {
        let chunk = py_strip(chunk);
        let Some(brace) = chunk.find('{') else {
            continue;
        };
        let name = py_strip(chunk.get(..brace).unwrap_or_default()).to_owned();
        let raw_args = chunk.get(brace..).unwrap_or_default();
        let (arguments, recovered) = match loads(raw_args) {
            Ok(value) => (dumps(&value, false, false), false),
            Err(err) if out.lenient() && i == last => {
                match err
                    .is_decode()
                    .then(|| repair_truncated(raw_args, None))
                    .flatten()
                {
                    Some(repaired) => (dumps(&repaired.value, false, false), true),
                    None => (raw_args.to_owned(), false),
                }
            }
            Err(err) if err.is_decode() || out.lenient() => (raw_args.to_owned(), false),
            Err(_) => return Err(Fail),
        };
        let call = ToolCall {
            id: make_mistral_id(),
            name,
            arguments,
        };
        if recovered {
            out.accept_recovered(call);
        } else {
            out.accept(call);
        }
    }
    Ok(())
}

fn parse_pre_v11(out: &mut Collector, first_raw: &str) -> Result<(), Fail> {
    match loads(first_raw) {
        Ok(value) => {
            for element in elements(&value) {
                take(out, element)?;
            }
            return Ok(());
        }
        Err(err) if !err.is_decode() && !out.lenient() => return Err(Fail),
        Err(_) => {}
    }
    if out.lenient()
        && let Some(repaired) = repair_truncated(first_raw, Some("name"))
    {
        // Reading the closed text wins unless the reference's object scan keeps more calls
        // (calls nested one level deeper than the repaired list's elements).
        let mut closed = Collector::new(Mode::Lenient);
        take_repaired(&mut closed, &repaired);
        let mut scanned = Collector::new(Mode::Lenient);
        scan_objects(&mut scanned, first_raw)?;
        out.absorb(if scanned.kept() > closed.kept() {
            scanned
        } else {
            closed
        });
        return Ok(());
    }
    scan_objects(out, first_raw)
}

/// The elements of a repaired pre-v11 list (or object); the last one counts as recovered when
/// the cut was inside it.
fn take_repaired(out: &mut Collector, repaired: &Repaired) {
    let is_list = matches!(repaired.value, PyValue::List(_));
    // The cut was inside the last element when it is deeper than the list itself.
    let last_cut = !is_list || repaired.depth_at_eof >= 2;
    let items = elements(&repaired.value);
    for (i, element) in items.iter().enumerate() {
        if last_cut && i + 1 == items.len() {
            match element_call(element) {
                Ok(Some(call)) if element.get("arguments").is_some() => out.accept_recovered(call),
                _ => out.drop_malformed(),
            }
        } else if take(out, element).is_err() {
            // `take` only fails in strict mode; count it rather than lose it should that change.
            out.drop_malformed();
        }
    }
}

/// MAIN04's fallback: `raw_decode` at every character, one step on failure.
fn scan_objects(out: &mut Collector, first_raw: &str) -> Result<(), Fail> {
    let mut idx = 0;
    while idx < first_raw.len() {
        match raw_decode(first_raw, idx) {
            Ok((value, end)) => {
                if matches!(value, PyValue::Dict(_)) && value.get("name").is_some() {
                    take(out, &value)?;
                }
                idx = end;
            }
            Err(JsonError::Decode { .. }) => {
                idx += first_raw
                    .get(idx..)
                    .and_then(|rest| rest.chars().next())
                    .map_or(1, char::len_utf8);
            }
            // Too deep or too long: strict gives up on the whole text; lenient keeps what it
            // found and stops, since every later offset is inside the same structure.
            Err(_) if out.lenient() => break,
            Err(_) => return Err(Fail),
        }
    }
    Ok(())
}

impl Parser for Mistral {
    fn name(&self) -> &'static str {
        "mistral"
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(BOT_TOKEN) {
            return Parsed::pass_through(text);
        }
        let parts: Vec<&str> = text.split(BOT_TOKEN).collect();
        let (content, chunks) = match parts.split_first() {
            Some((first, rest)) => (py_strip(first), rest),
            None => return Parsed::pass_through(text),
        };
        let first_raw = chunks.first().map_or("", |c| py_strip(c));
        let mut out = Collector::new(mode);
        let result = if first_raw.starts_with('[') || first_raw.starts_with('{') {
            parse_pre_v11(&mut out, first_raw)
        } else {
            parse_v11(&mut out, chunks)
        };
        if result.is_err() {
            return Parsed::pass_through(text);
        }
        out.finish(text, || (!content.is_empty()).then(|| content.to_owned()))
    }
}
