//! Repair of a JSON call body cut off by the end of the generation (lenient mode only).
//!
//! A rollout that hits `max_tokens` mid-call leaves e.g. `{"name": "terminal", "arguments":
//! {"command": "ls -la`. The reference drops such a call (and, for hermes, every other call with
//! it). Lenient mode closes what is open and keeps the call if the result decodes.
//!
//! Only a genuine truncation is repaired: the fragment must be a valid *prefix* of JSON text that
//! runs into the end of input. Malformed JSON (a bad token anywhere) is never "repaired", so a call
//! is never invented from garbage. The cut is closed at the last point where the structure is
//! whole: an open string *value* is closed where it stops; a half-written key, number or literal,
//! or a dangling `,`/`:`, is cut back to the previous complete value.

use crate::pyjson::{PyValue, is_json_ws, loads, raw_decode};

/// A repaired fragment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Repaired {
    pub(crate) value: PyValue,
    /// How many containers were open where the text stopped (1 = inside the top-level object or
    /// array itself, 2 = inside one of its members, ...).
    pub(crate) depth_at_eof: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (top level, after `:` or after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// A key (after `,` in an object).
    Key,
    /// A key or `}` (just after `{`).
    KeyOrClose,
    Colon,
    CommaOrClose,
}

#[derive(Debug, Clone, Copy)]
struct Frame<'a> {
    is_object: bool,
    /// The raw text of the current key (objects only).
    key: Option<&'a str>,
}

/// What a string token turned out to be.
enum StringScan {
    /// Closed; the offset just past the closing quote.
    Complete(usize),
    /// Ran into the end of input; the offset to cut at so no half escape remains.
    Truncated(usize),
    Invalid,
}

/// The outcome of [`try_repair`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Repair {
    /// Not a truncation: malformed, or complete JSON (possibly followed by other text). Usually
    /// found after a few bytes.
    NotTruncated,
    /// A valid JSON prefix running into the end of the text, but nothing decodable could be kept.
    Unrecoverable,
    Repaired(Repaired),
}

/// Closes a truncated JSON call body; `None` unless it was repaired.
pub(crate) fn repair_truncated(fragment: &str, protected_key: Option<&str>) -> Option<Repaired> {
    match try_repair(fragment, protected_key) {
        Repair::Repaired(repaired) => Some(repaired),
        Repair::NotTruncated | Repair::Unrecoverable => None,
    }
}

/// Closes a truncated JSON call body. `protected_key` names a top-level key whose string value must
/// not be closed early (a cut-off tool *name* would call the wrong tool): such a cut falls back to
/// the previous complete value, which drops the key.
pub(crate) fn try_repair(fragment: &str, protected_key: Option<&str>) -> Repair {
    let bytes = fragment.as_bytes();
    let len = bytes.len();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut expect = Expect::Value;
    let mut top_done = false;
    // The latest offset where the prefix is whole, with how many frames were open there. Frames
    // below that depth cannot change later without a pop, and a pop sets a newer checkpoint.
    let mut checkpoint: Option<(usize, usize)> = None;
    let mut i = 0;

    // Where the text stops, and how to finish it from there.
    let cut: Cut = loop {
        while i < len && is_json_ws(bytes[i]) {
            i += 1;
        }
        let Some(&c) = bytes.get(i) else {
            break if top_done || stack.is_empty() {
                return Repair::NotTruncated;
            } else if expect == Expect::CommaOrClose {
                Cut::AfterValue(len)
            } else {
                Cut::Checkpoint
            };
        };
        if top_done {
            return Repair::NotTruncated;
        }
        match expect {
            Expect::Value | Expect::ValueOrClose => match c {
                b'{' | b'[' => {
                    stack.push(Frame {
                        is_object: c == b'{',
                        key: None,
                    });
                    i += 1;
                    expect = if c == b'{' {
                        Expect::KeyOrClose
                    } else {
                        Expect::ValueOrClose
                    };
                    checkpoint = Some((i, stack.len()));
                }
                b']' if expect == Expect::ValueOrClose => {
                    stack.pop();
                    i += 1;
                    value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                }
                b'"' => match scan_string(bytes, i) {
                    StringScan::Complete(end) => {
                        i = end;
                        value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                    }
                    StringScan::Truncated(at) => {
                        let protected = stack.len() == 1
                            && stack
                                .last()
                                .is_some_and(|f| f.is_object && f.key == protected_key);
                        break if stack.is_empty() || protected {
                            Cut::Checkpoint
                        } else {
                            Cut::InStringValue(at)
                        };
                    }
                    StringScan::Invalid => return Repair::NotTruncated,
                },
                b'-' | b'0'..=b'9' if !fragment.get(i..).is_some_and(|r| r.starts_with("-I")) => {
                    let end = token_end(bytes, i, |b| {
                        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                    let complete = is_complete_number(fragment.get(i..end).unwrap_or_default());
                    if end == len {
                        break if complete {
                            Cut::AfterValue(len)
                        } else {
                            Cut::Checkpoint
                        };
                    }
                    if !complete {
                        return Repair::NotTruncated;
                    }
                    i = end;
                    value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                }
                b'-' | b't' | b'f' | b'n' | b'N' | b'I' => {
                    let end = token_end(bytes, i + 1, |b| b.is_ascii_alphabetic());
                    let token = fragment.get(i..end).unwrap_or_default();
                    let literals = ["true", "false", "null", "NaN", "Infinity", "-Infinity"];
                    if literals.contains(&token) {
                        i = end;
                        value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                    } else if end == len && literals.iter().any(|l| l.starts_with(token)) {
                        break Cut::Checkpoint;
                    } else {
                        return Repair::NotTruncated;
                    }
                }
                _ => return Repair::NotTruncated,
            },
            Expect::Key | Expect::KeyOrClose => match c {
                b'"' => match scan_string(bytes, i) {
                    StringScan::Complete(end) => {
                        if let Some(frame) = stack.last_mut() {
                            frame.key = fragment.get(i + 1..end - 1);
                        }
                        i = end;
                        expect = Expect::Colon;
                    }
                    StringScan::Truncated(_) => break Cut::Checkpoint,
                    StringScan::Invalid => return Repair::NotTruncated,
                },
                b'}' if expect == Expect::KeyOrClose => {
                    stack.pop();
                    i += 1;
                    value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                }
                _ => return Repair::NotTruncated,
            },
            Expect::Colon => {
                if c != b':' {
                    return Repair::NotTruncated;
                }
                i += 1;
                expect = Expect::Value;
            }
            Expect::CommaOrClose => {
                let in_object = stack.last().is_some_and(|f| f.is_object);
                match c {
                    b',' => {
                        i += 1;
                        expect = if in_object {
                            Expect::Key
                        } else {
                            Expect::Value
                        };
                    }
                    b'}' if in_object => {
                        stack.pop();
                        i += 1;
                        value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                    }
                    b']' if !in_object => {
                        stack.pop();
                        i += 1;
                        value_done(&stack, &mut expect, &mut top_done, &mut checkpoint, i);
                    }
                    _ => return Repair::NotTruncated,
                }
            }
        }
    };

    let depth_at_eof = stack.len();
    let closed = close_at(fragment, &cut, &stack, checkpoint);
    match closed.and_then(|text| loads(&text).ok()) {
        Some(value) => Repair::Repaired(Repaired {
            value,
            depth_at_eof,
        }),
        None => Repair::Unrecoverable,
    }
}

/// The fragment cut at `cut` with the containers open there closed.
fn close_at(
    fragment: &str,
    cut: &Cut,
    stack: &[Frame<'_>],
    checkpoint: Option<(usize, usize)>,
) -> Option<String> {
    let (mut repaired, open_frames) = match *cut {
        Cut::InStringValue(at) => (format!("{}\"", fragment.get(..at)?), stack.len()),
        Cut::AfterValue(at) => (fragment.get(..at)?.to_owned(), stack.len()),
        Cut::Checkpoint => {
            let (at, depth) = checkpoint?;
            (fragment.get(..at)?.to_owned(), depth)
        }
    };
    for frame in stack.get(..open_frames)?.iter().rev() {
        repaired.push(if frame.is_object { '}' } else { ']' });
    }
    Some(repaired)
}

/// Where a truncated fragment is closed.
enum Cut {
    /// Inside a string value: cut at the offset (before any half escape) and close the quote.
    InStringValue(usize),
    /// Right after a complete value: close the open containers.
    AfterValue(usize),
    /// Back at the latest checkpoint.
    Checkpoint,
}

fn value_done(
    stack: &[Frame<'_>],
    expect: &mut Expect,
    top_done: &mut bool,
    checkpoint: &mut Option<(usize, usize)>,
    at: usize,
) {
    if stack.is_empty() {
        *top_done = true;
    } else {
        *expect = Expect::CommaOrClose;
        *checkpoint = Some((at, stack.len()));
    }
}

fn token_end(bytes: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < bytes.len() && keep(bytes[i]) {
        i += 1;
    }
    i
}

/// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?` in full.
fn is_complete_number(token: &str) -> bool {
    let b = token.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Scans the string token starting at the quote `start`, with CPython's strict rules.
fn scan_string(bytes: &[u8], start: usize) -> StringScan {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return StringScan::Complete(i + 1),
            b'\\' => match bytes.get(i + 1) {
                None => return StringScan::Truncated(i),
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = bytes.get(i + 2..).unwrap_or_default();
                    let available = hex.len().min(4);
                    if !hex.iter().take(available).all(u8::is_ascii_hexdigit) {
                        return StringScan::Invalid;
                    }
                    if available < 4 {
                        return StringScan::Truncated(i);
                    }
                    i += 6;
                }
                Some(_) => return StringScan::Invalid,
            },
            0..=0x1f => return StringScan::Invalid,
            _ => i += 1,
        }
    }
    StringScan::Truncated(bytes.len())
}

/// A complete JSON value followed only by a proper prefix of `close_tag`: the generation stopped
/// inside the closing tag (`<tool_call>{…}</tool_ca`). Returns the value.
pub(crate) fn value_before_cut_tag(body: &str, close_tag: &str) -> Option<PyValue> {
    let (value, end) = raw_decode(body, 0).ok()?;
    let rest = body
        .get(end..)?
        .trim_start_matches(|c: char| c.is_ascii() && is_json_ws(c as u8));
    (!rest.is_empty() && rest.len() < close_tag.len() && close_tag.starts_with(rest))
        .then_some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::python::dumps;

    fn repaired(fragment: &str) -> Option<String> {
        repair_truncated(fragment, Some("name")).map(|r| dumps(&r.value, false, false))
    }

    #[test]
    fn closes_an_open_string_value_and_containers() {
        assert_eq!(
            repaired(r#"{"name": "terminal", "arguments": {"command": "ls -la"#).as_deref(),
            Some(r#"{"name": "terminal", "arguments": {"command": "ls -la"}}"#)
        );
    }

    #[test]
    fn cuts_back_half_written_tokens() {
        let cases = [
            (r#"{"a": 1, "b"#, r#"{"a": 1}"#),
            (r#"{"a": 1, "b":"#, r#"{"a": 1}"#),
            (r#"{"a": 1,"#, r#"{"a": 1}"#),
            (r#"{"a": 12"#, r#"{"a": 12}"#),
            (r#"{"a": 1."#, r#"{}"#),
            (r#"{"a": tr"#, r#"{}"#),
            (r#"{"a": true"#, r#"{"a": true}"#),
            (r#"{"a": [1, {"b": "x\"#, r#"{"a": [1, {"b": "x"}]}"#),
            (r#"{"a": "\u00"#, r#"{"a": ""}"#),
            (r#"[{"name": "a"}, {"#, r#"[{"name": "a"}, {}]"#),
        ];
        for (fragment, want) in cases {
            assert_eq!(repaired(fragment).as_deref(), Some(want), "{fragment}");
        }
    }

    #[test]
    fn never_closes_a_cut_off_name() {
        assert_eq!(repaired(r#"{"name": "term"#).as_deref(), Some("{}"));
    }

    #[test]
    fn refuses_malformed_or_complete_text() {
        for fragment in [
            r#"{"a": 1 "b": 2"#,
            r#"{"a": x"#,
            r#"{"a": 1}"#,
            r#"{"a": 1} {"#,
            "",
            "ls",
        ] {
            assert_eq!(repaired(fragment), None, "{fragment}");
        }
    }

    #[test]
    fn reports_depth_at_the_cut() {
        let r = repair_truncated(r#"[{"name": "a", "arguments": {"x": "y"#, None).unwrap();
        assert_eq!(r.depth_at_eof, 3);
        let r = repair_truncated(r#"[{"name": "a"}, "#, None).unwrap();
        assert_eq!(r.depth_at_eof, 1);
    }

    #[test]
    fn accepts_a_value_cut_inside_the_closing_tag() {
        assert!(value_before_cut_tag(r#"{"name": "a"}</tool_ca"#, "</tool_call>").is_some());
        assert!(value_before_cut_tag(r#"{"name": "a"} </"#, "</tool_call>").is_some());
        assert!(value_before_cut_tag(r#"{"name": "a"} junk"#, "</tool_call>").is_none());
        assert!(value_before_cut_tag(r#"{"name": "a"}"#, "</tool_call>").is_none());
    }
}
