//! PR's `_normalize_tool_args(name, raw) -> (dict, schema_valid)` (spec §1.10, golden table).
//!
//! The PR source is not public in full; the behaviour below reproduces every golden row:
//! - `raw` is decoded with `json.loads`; text that is not JSON stands for itself as a string;
//! - a dict is used as-is and is the only case that can be `schema_valid`;
//! - a string holding a JSON *dict* (double-encoded arguments) is decoded once more (never valid);
//! - anything else is wrapped: `{"command": str(value)}` for `terminal` (Python `str`: `42` →
//!   `"42"`, `[1,2]` → `"[1, 2]"`, `null` → `"None"`), `{"input": value}` for other tools;
//! - for `terminal`, `schema_valid` also needs a non-blank string `command` in the decoded dict,
//!   and a dict with `input` but no `command` has `input` renamed to `command` (moved last, as
//!   `args["command"] = args.pop("input")` would; the value is kept as is).
//!
//! `schema_valid` means "decoded directly to a dict" (plus the terminal rule); it does not check
//! the tool's JSON schema.

use serde_json::{Map, Value};

use crate::common::py_strip;
use crate::pyjson::{PyValue, loads};
use crate::python::{py_str, to_serde};

/// §1.10 argument normalisation. Returns the arguments as a map (sorted by key: `serde_json`'s
/// map without `preserve_order`; integers beyond 64 bits become floats, `NaN`/`Infinity` become
/// `null`) and whether they were schema-valid.
pub fn normalize_tool_args(tool_name: &str, raw: &str) -> (Map<String, Value>, bool) {
    let terminal = tool_name == "terminal";
    let parsed = loads(raw).unwrap_or_else(|_| PyValue::Str(raw.to_owned()));
    let (mut pairs, mut schema_valid) = match parsed {
        PyValue::Dict(pairs) => (pairs, true),
        PyValue::Str(s) => match loads(&s) {
            Ok(PyValue::Dict(pairs)) => (pairs, false),
            _ => (wrap(terminal, PyValue::Str(s)), false),
        },
        other => (wrap(terminal, other), false),
    };
    if terminal {
        let command = pairs.iter().find(|(k, _)| k == "command").map(|(_, v)| v);
        let has_command = command.is_some();
        if !matches!(command, Some(PyValue::Str(s)) if !py_strip(s).is_empty()) {
            schema_valid = false;
        }
        if !has_command && let Some(at) = pairs.iter().position(|(k, _)| k == "input") {
            let (_, value) = pairs.remove(at);
            pairs.push(("command".to_owned(), value));
        }
    }
    let map = pairs
        .iter()
        .map(|(k, v)| (k.clone(), to_serde(v)))
        .collect();
    (map, schema_valid)
}

fn wrap(terminal: bool, value: PyValue) -> Vec<(String, PyValue)> {
    if terminal {
        vec![("command".to_owned(), PyValue::Str(py_str(&value)))]
    } else {
        vec![("input".to_owned(), value)]
    }
}
