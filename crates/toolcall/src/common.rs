//! Helpers shared by the parsers (UP `common.py` and the bits every reference parser repeats).
//!
//! Python's `\s` and `str.strip()` use `str.isspace`, which also counts U+001C..U+001F; Rust's
//! `\s` and `char::is_whitespace` do not, so patterns use [`PY_WS`] and code uses [`py_strip`].

use regex::Regex;

use crate::pyjson::PyValue;
use crate::python::dumps;
use crate::{Diagnostics, Mode, Parsed, ToolCall};

/// Python's `\s` (Unicode `str.isspace`) as a Rust regex class.
pub(crate) const PY_WS: &str = r"[\s\x1C-\x1F]";

/// Python `str.isspace` for one character.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Compiles one of this crate's literal patterns.
#[expect(
    clippy::expect_used,
    reason = "the pattern is a literal of this crate, compiled by every test; a typo fails the \
              whole test suite and cannot depend on the parsed text"
)]
pub(crate) fn literal_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("literal tool-call pattern compiles")
}

/// One `<OPEN>payload</CLOSE>` body, or the trailing unclosed `<OPEN>payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload<'a> {
    pub(crate) body: &'a str,
    /// False for the trailing `<OPEN>…` without a closing tag (a truncated generation).
    pub(crate) closed: bool,
}

/// UP `extract_tagged_payloads`: the regex `OPEN\s*(.*?)\s*CLOSE|OPEN\s*(.*)` (DOTALL) with empty
/// (all-whitespace) payloads skipped.
///
/// Written out by hand because the semantics are simple: the closed form ends at the first `CLOSE`
/// after `OPEN` with surrounding whitespace trimmed; without any later `CLOSE` the payload runs to
/// the end of the text, trailing whitespace included.
pub(crate) fn extract_tagged_payloads<'a>(
    text: &'a str,
    open: &str,
    close: &str,
) -> Vec<Payload<'a>> {
    let mut payloads = Vec::new();
    let mut pos = 0;
    while let Some(found) = text.get(pos..).and_then(|rest| rest.find(open)) {
        let after_open = pos + found + open.len();
        let rest = text.get(after_open..).unwrap_or_default();
        let body_start = after_open + (rest.len() - rest.trim_start_matches(is_py_space).len());
        let tail = text.get(body_start..).unwrap_or_default();
        let (body, closed, next) = match tail.find(close) {
            Some(at) => {
                let inner = tail.get(..at).unwrap_or_default();
                let body = inner.trim_end_matches(is_py_space);
                (body, true, body_start + at + close.len())
            }
            None => (tail, false, text.len()),
        };
        if !py_strip(body).is_empty() {
            payloads.push(Payload { body, closed });
        }
        pos = next;
    }
    payloads
}

/// Repeated `find` of one needle at non-decreasing offsets without rescanning: the reference
/// searches from every candidate again, which is quadratic on long unclosed output.
#[derive(Debug)]
pub(crate) struct NextFind<'n> {
    needle: &'n str,
    /// `(searched from, first match at or after it)` of the last real search.
    cached: Option<(usize, Option<usize>)>,
}

impl<'n> NextFind<'n> {
    pub(crate) fn new(needle: &'n str) -> Self {
        NextFind {
            needle,
            cached: None,
        }
    }

    /// The first occurrence of the needle in `haystack` at or after `from` (same haystack on
    /// every call).
    pub(crate) fn at(&mut self, haystack: &str, from: usize) -> Option<usize> {
        if let Some((searched, found)) = self.cached
            && searched <= from
        {
            match found {
                None => return None,
                Some(at) if at >= from => return Some(at),
                Some(_) => {}
            }
        }
        let found = haystack
            .get(from..)
            .and_then(|rest| rest.find(self.needle))
            .map(|at| from + at);
        self.cached = Some((from, found));
        found
    }
}

/// `text[:idx].strip() or None`: the content before a marker.
pub(crate) fn content_before(text: &str, idx: usize) -> Option<String> {
    let prefix = py_strip(text.get(..idx).unwrap_or_default());
    (!prefix.is_empty()).then(|| prefix.to_owned())
}

/// UP `split_content_from_first_marker`: the stripped text before `marker` (or the whole text when
/// the marker is absent), `None` if empty, and whether the marker was found.
pub(crate) fn split_content_from_first_marker(text: &str, marker: &str) -> (Option<String>, bool) {
    match text.find(marker) {
        Some(idx) => (content_before(text, idx), true),
        None => (content_before(text, text.len()), false),
    }
}

/// `uuid.uuid4().hex[:len]`: lowercase hex, the version nibble included where `len > 12`.
pub(crate) fn make_hex_id(len: usize) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    hex.get(..len).unwrap_or(&hex).to_owned()
}

/// UP `make_uuid_id`: `call_` + 8 hex (hermes, llama, deepseek, glm, custom_xml, auto).
pub(crate) fn make_uuid_id() -> String {
    format!("call_{}", make_hex_id(8))
}

/// UP `make_mistral_id`: 9 characters drawn uniformly from `[A-Za-z0-9]`.
pub(crate) fn make_mistral_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::with_capacity(9);
    while id.len() < 9 {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the UUID version and variant bits, so they are not random.
        for (i, b) in bytes.into_iter().enumerate() {
            // Rejection sampling: 248 = 4 * 62 keeps the choice unbiased.
            if i == 6 || i == 8 || b >= 248 || id.len() == 9 {
                continue;
            }
            if let Some(&c) = ALPHABET.get(usize::from(b) % ALPHABET.len()) {
                id.push(char::from(c));
            }
        }
    }
    id
}

/// UP `normalize_arguments`: a string is passed through, anything else is
/// `json.dumps(ensure_ascii=False)` (`None` → `"null"`).
pub(crate) fn normalize_arguments(args: &PyValue) -> String {
    match args {
        PyValue::Str(s) => s.clone(),
        other => dumps(other, false, false),
    }
}

/// How `"name" not in tc` followed by `tc["name"]` / `tc.get(...)` plays out in Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameCheck {
    /// A dict with a `name` key.
    Present,
    /// `"name" not in tc` is true: the reference skips the call.
    Skip,
    /// The check or the subscript raises (`TypeError`/`AttributeError`): the reference's whole
    /// parse returns the raw text.
    Raises,
}

/// MAIN04's `if "name" not in tc: continue` on any decoded value: membership is a key test for a
/// dict, an element test for a list and a substring test for a str; other types raise.
pub(crate) fn name_check(value: &PyValue) -> NameCheck {
    match value {
        PyValue::Dict(_) if value.get("name").is_some() => NameCheck::Present,
        PyValue::Dict(_) => NameCheck::Skip,
        PyValue::List(items) if items.iter().any(|v| *v == PyValue::Str("name".into())) => {
            NameCheck::Raises
        }
        PyValue::List(_) => NameCheck::Skip,
        PyValue::Str(s) if s.contains("name") => NameCheck::Raises,
        PyValue::Str(_) => NameCheck::Skip,
        PyValue::None | PyValue::Bool(_) | PyValue::Int(_) | PyValue::Float(_) => NameCheck::Raises,
    }
}

/// Gathers one parse's calls and applies the mode's bookkeeping.
#[derive(Debug)]
pub(crate) struct Collector {
    mode: Mode,
    calls: Vec<ToolCall>,
    diagnostics: Diagnostics,
}

impl Collector {
    pub(crate) fn new(mode: Mode) -> Self {
        Collector {
            mode,
            calls: Vec::new(),
            diagnostics: Diagnostics::default(),
        }
    }

    pub(crate) fn lenient(&self) -> bool {
        self.mode == Mode::Lenient
    }

    /// A call the reference returns. Lenient mode drops (and counts) a call with a blank name.
    pub(crate) fn accept(&mut self, call: ToolCall) {
        if self.lenient() && py_strip(&call.name).is_empty() {
            self.drop_malformed();
        } else {
            self.calls.push(call);
        }
    }

    /// A truncated trailing call made whole (lenient only).
    pub(crate) fn accept_recovered(&mut self, call: ToolCall) {
        if py_strip(&call.name).is_empty() {
            self.drop_malformed();
        } else {
            self.diagnostics.recovered_truncated += 1;
            self.calls.push(call);
        }
    }

    /// A malformed call skipped while the others are kept (lenient only).
    pub(crate) fn drop_malformed(&mut self) {
        self.diagnostics.dropped += 1;
    }

    /// A string argument kept single-encoded where the reference double-encodes (lenient only).
    pub(crate) fn note_single_encoded(&mut self) {
        self.diagnostics.single_encoded += 1;
    }

    /// How many calls are kept so far.
    pub(crate) fn kept(&self) -> usize {
        self.calls.len()
    }

    /// Takes over another collector's calls and counters (an alternative reading that won).
    pub(crate) fn absorb(&mut self, other: Collector) {
        self.calls.extend(other.calls);
        self.diagnostics.dropped += other.diagnostics.dropped;
        self.diagnostics.recovered_truncated += other.diagnostics.recovered_truncated;
        self.diagnostics.single_encoded += other.diagnostics.single_encoded;
    }

    /// The result: the pass-through invariant when no call survived, else `content` and the calls.
    pub(crate) fn finish(self, text: &str, content: impl FnOnce() -> Option<String>) -> Parsed {
        let mut diagnostics = self.diagnostics;
        diagnostics.found = self.calls.len() + diagnostics.dropped;
        if self.calls.is_empty() {
            return Parsed {
                content: Some(text.to_owned()),
                calls: Vec::new(),
                diagnostics,
            };
        }
        Parsed {
            content: content(),
            calls: self.calls,
            diagnostics,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn bodies(text: &str) -> Vec<(&str, bool)> {
        extract_tagged_payloads(text, "<t>", "</t>")
            .into_iter()
            .map(|p| (p.body, p.closed))
            .collect()
    }

    #[test]
    fn tagged_payloads_follow_the_reference_regex() {
        assert_eq!(
            bodies("<t> a </t>x<t>b</t>"),
            vec![("a", true), ("b", true)]
        );
        assert_eq!(bodies("<t>  </t><t>\n{x} \n"), vec![("{x} \n", false)]);
        assert_eq!(bodies("<t><t>a</t>"), vec![("<t>a", true)]);
        assert_eq!(bodies("<t></t>"), vec![]);
        assert_eq!(bodies("<t>a\u{1c}</t>"), vec![("a", true)]);
    }

    #[test]
    fn strip_uses_python_whitespace() {
        assert_eq!(py_strip("\u{1f} a \u{a0}"), "a");
    }

    #[test]
    fn ids_have_the_reference_shapes() {
        let id = make_uuid_id();
        assert_eq!(id.len(), 13);
        assert!(id.starts_with("call_"));
        assert!(
            id[5..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let long = make_hex_id(24);
        assert_eq!(long.len(), 24);
        assert_eq!(&long[12..13], "4");
        let mistral = make_mistral_id();
        assert_eq!(mistral.len(), 9);
        assert!(mistral.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
