//! Python's `json.loads` / `JSONDecoder.raw_decode`, reimplemented over an order-preserving value.
//!
//! The reference parsers decode with CPython's C scanner and re-serialise with `json.dumps`, so
//! parity needs the same grammar (NaN/Infinity literals, big integers, `1.` being an int followed by
//! junk, lone-key dicts keeping first position with last value), the same failure positions (the
//! "Expecting value: line 1 column 1 (char 0)" text reaches the model), and Python's dict order.
//! `serde_json::Value` has none of these without the workspace-wide `preserve_order` and
//! `arbitrary_precision` features, hence this small decoder.

use std::collections::HashMap;

/// Nesting depth at which decoding fails like CPython's `RecursionError`. CPython's exact limit
/// depends on the interpreter's stack; 1000 is its default recursion limit.
const MAX_DEPTH: usize = 1000;

/// CPython refuses to convert integer strings longer than this (`sys.get_int_max_str_digits()`).
pub(crate) const INT_MAX_STR_DIGITS: usize = 4300;

/// A decoded JSON (or Python literal) value, as the Python object it would be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    None,
    Bool(bool),
    /// A Python `int` in canonical decimal form (`-0` is `0`); arbitrary precision.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    /// Keys in insertion order. JSON input never repeats a key here; Python-literal dicts may
    /// repeat a key *text* when distinct Python keys (`1` and `'1'`) serialise the same.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// `dict.get(key)` for a dict; `None` for anything else or a missing key.
    pub(crate) fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why decoding failed, split the way the reference's `except` clauses split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// `json.JSONDecodeError(msg, doc, pos)`; `pos` is a byte offset into the decoded text.
    Decode { msg: &'static str, pos: usize },
    /// `RecursionError`: nesting deeper than [`MAX_DEPTH`]. Not a `JSONDecodeError` (nor a
    /// `ValueError`), so most reference `except` clauses let it escape.
    Recursion,
    /// `ValueError` from the 4300-digit integer limit; also not a `JSONDecodeError`.
    IntTooLong { digits: usize },
}

impl JsonError {
    /// True for `json.JSONDecodeError` (what `except json.JSONDecodeError` catches).
    pub(crate) fn is_decode(&self) -> bool {
        matches!(self, JsonError::Decode { .. })
    }

    /// The exception's `str()` as Python prints it, given the text that was decoded.
    pub(crate) fn python_message(&self, doc: &str) -> String {
        match self {
            JsonError::Decode { msg, pos } => {
                let pos = (*pos).min(doc.len());
                let before = doc.get(..pos).unwrap_or(doc);
                let char_pos = before.chars().count();
                let lineno = before.matches('\n').count() + 1;
                // Python: colno = pos - doc.rindex('\n', 0, pos), or pos + 1 on the first line.
                let colno = match before.rfind('\n') {
                    Some(nl) => before.get(nl..).map_or(0, |tail| tail.chars().count()),
                    None => char_pos + 1,
                };
                format!("{msg}: line {lineno} column {colno} (char {char_pos})")
            }
            JsonError::Recursion => {
                "maximum recursion depth exceeded while decoding a JSON object from a unicode string"
                    .to_owned()
            }
            JsonError::IntTooLong { digits } => format!(
                "Exceeds the limit ({INT_MAX_STR_DIGITS} digits) for integer string conversion: \
                 value has {digits} digits; use sys.set_int_max_str_digits() to increase the limit"
            ),
        }
    }
}

/// `json.loads(text)`: one value, surrounded by JSON whitespace only.
pub(crate) fn loads(text: &str) -> Result<PyValue, JsonError> {
    if text.starts_with('\u{feff}') {
        return Err(JsonError::Decode {
            msg: "Unexpected UTF-8 BOM (decode using utf-8-sig)",
            pos: 0,
        });
    }
    let mut scanner = Scanner::new(text);
    let start = scanner.skip_ws(0);
    let (value, end) = scanner.scan_once(start)?;
    let end = scanner.skip_ws(end);
    if end != text.len() {
        return Err(JsonError::Decode {
            msg: "Extra data",
            pos: end,
        });
    }
    Ok(value)
}

/// `JSONDecoder().raw_decode(text, idx)`: one value starting exactly at byte `start` (no leading
/// whitespace skipped), returning the byte offset just past it.
pub(crate) fn raw_decode(text: &str, start: usize) -> Result<(PyValue, usize), JsonError> {
    Scanner::new(text).scan_once(start)
}

/// JSON whitespace as CPython's scanner defines it (`IS_WHITESPACE`): not Python's `str.isspace`.
pub(crate) fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
}

/// An open container while scanning (an explicit stack instead of recursion, so the nesting limit
/// is a semantic one and never the thread's stack size).
enum Frame {
    Array(Vec<PyValue>),
    Object {
        pairs: Vec<(String, PyValue)>,
        /// Key -> index in `pairs`: a repeated key keeps its first position and takes the last
        /// value, as `dict(pairs)` does.
        index: HashMap<String, usize>,
        /// The key whose value is being scanned.
        key: String,
    },
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
        }
    }

    fn skip_ws(&self, mut idx: usize) -> usize {
        while idx < self.bytes.len() && is_json_ws(self.bytes[idx]) {
            idx += 1;
        }
        idx
    }

    fn starts_with_at(&self, idx: usize, literal: &str) -> bool {
        self.bytes
            .get(idx..)
            .is_some_and(|rest| rest.starts_with(literal.as_bytes()))
    }

    /// After `{` or `,` in an object: the next key and its `:`; returns the value's offset.
    fn object_key(&self, idx: usize) -> Result<(String, usize), JsonError> {
        if self.bytes.get(idx) != Some(&b'"') {
            return Err(JsonError::Decode {
                msg: "Expecting property name enclosed in double quotes",
                pos: idx,
            });
        }
        let (key, next) = self.scan_string_raw(idx + 1)?;
        let idx = self.skip_ws(next);
        if self.bytes.get(idx) != Some(&b':') {
            return Err(JsonError::Decode {
                msg: "Expecting ':' delimiter",
                pos: idx,
            });
        }
        Ok((key, self.skip_ws(idx + 1)))
    }

    /// CPython `scan_once_unicode` with `_parse_object_unicode` / `_parse_array_unicode`: the
    /// same grammar, error messages and positions. A `StopIteration(idx)` is "Expecting value"
    /// at `idx`.
    fn scan_once(&mut self, start: usize) -> Result<(PyValue, usize), JsonError> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut idx = start;
        loop {
            // Scan the value at `idx`: a scalar, an empty container, or open a container.
            let Some(&first) = self.bytes.get(idx) else {
                return Err(expecting_value(idx));
            };
            let (mut value, mut end) = match first {
                b'{' | b'[' => {
                    // CPython enters a recursive call for every container, empty ones included.
                    if stack.len() >= MAX_DEPTH {
                        return Err(JsonError::Recursion);
                    }
                    let inner = self.skip_ws(idx + 1);
                    if first == b'{' && self.bytes.get(inner) == Some(&b'}') {
                        (PyValue::Dict(Vec::new()), inner + 1)
                    } else if first == b'[' && self.bytes.get(inner) == Some(&b']') {
                        (PyValue::List(Vec::new()), inner + 1)
                    } else if first == b'{' {
                        let (key, value_at) = self.object_key(inner)?;
                        stack.push(Frame::Object {
                            pairs: Vec::new(),
                            index: HashMap::new(),
                            key,
                        });
                        idx = value_at;
                        continue;
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        idx = inner;
                        continue;
                    }
                }
                b'"' => self.scan_string(idx + 1)?,
                b'n' if self.starts_with_at(idx, "null") => (PyValue::None, idx + 4),
                b't' if self.starts_with_at(idx, "true") => (PyValue::Bool(true), idx + 4),
                b'f' if self.starts_with_at(idx, "false") => (PyValue::Bool(false), idx + 5),
                b'N' if self.starts_with_at(idx, "NaN") => (PyValue::Float(f64::NAN), idx + 3),
                b'I' if self.starts_with_at(idx, "Infinity") => {
                    (PyValue::Float(f64::INFINITY), idx + 8)
                }
                b'-' if self.starts_with_at(idx, "-Infinity") => {
                    (PyValue::Float(f64::NEG_INFINITY), idx + 9)
                }
                _ => self.match_number(idx)?,
            };
            // A value is complete: hand it to the open containers, closing those that end here.
            loop {
                let Some(frame) = stack.last_mut() else {
                    return Ok((value, end));
                };
                let after = self.skip_ws(end);
                let closing = match frame {
                    Frame::Array(items) => {
                        items.push(value);
                        b']'
                    }
                    Frame::Object { pairs, index, key } => {
                        let key = std::mem::take(key);
                        match index.get(&key) {
                            Some(&at) => {
                                if let Some(slot) = pairs.get_mut(at) {
                                    slot.1 = value;
                                }
                            }
                            None => {
                                index.insert(key.clone(), pairs.len());
                                pairs.push((key, value));
                            }
                        }
                        b'}'
                    }
                };
                if self.bytes.get(after) == Some(&closing) {
                    value = match stack.pop() {
                        Some(Frame::Array(items)) => PyValue::List(items),
                        Some(Frame::Object { pairs, .. }) => PyValue::Dict(pairs),
                        None => PyValue::None,
                    };
                    end = after + 1;
                    continue;
                }
                if self.bytes.get(after) != Some(&b',') {
                    return Err(JsonError::Decode {
                        msg: "Expecting ',' delimiter",
                        pos: after,
                    });
                }
                idx = self.skip_ws(after + 1);
                if let Some(Frame::Object { key, .. }) = stack.last_mut() {
                    let (next_key, value_at) = self.object_key(idx)?;
                    *key = next_key;
                    idx = value_at;
                }
                break;
            }
        }
    }

    fn scan_string(&self, start: usize) -> Result<(PyValue, usize), JsonError> {
        let (s, end) = self.scan_string_raw(start)?;
        Ok((PyValue::Str(s), end))
    }

    /// CPython `scanstring_unicode` with `strict=True`; `start` is just past the opening quote.
    fn scan_string_raw(&self, start: usize) -> Result<(String, usize), JsonError> {
        let bytes = self.bytes;
        let len = bytes.len();
        let begin = start - 1;
        let unterminated = JsonError::Decode {
            msg: "Unterminated string starting at",
            pos: begin,
        };
        let mut out = String::new();
        let mut pos = start;
        loop {
            let chunk = pos;
            while pos < len {
                let b = bytes[pos];
                if b == b'"' || b == b'\\' {
                    break;
                }
                if b <= 0x1f {
                    return Err(JsonError::Decode {
                        msg: "Invalid control character at",
                        pos,
                    });
                }
                pos += 1;
            }
            if pos >= len {
                return Err(unterminated);
            }
            // `"` and `\` are ASCII, so both ends of the chunk are char boundaries.
            out.push_str(self.text.get(chunk..pos).unwrap_or_default());
            if bytes[pos] == b'"' {
                return Ok((out, pos + 1));
            }
            let backslash = pos;
            pos += 1;
            let Some(&esc) = bytes.get(pos) else {
                return Err(unterminated);
            };
            if esc != b'u' {
                let ch = match esc {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => {
                        return Err(JsonError::Decode {
                            msg: "Invalid \\escape",
                            pos: backslash,
                        });
                    }
                };
                out.push(ch);
                pos += 1;
                continue;
            }
            let u_pos = pos;
            let bad_u = JsonError::Decode {
                msg: "Invalid \\uXXXX escape",
                pos: u_pos,
            };
            let hex_start = pos + 1;
            // CPython demands a character after the four digits (`end >= len` fails).
            if hex_start + 4 >= len {
                return Err(bad_u);
            }
            let Some(high) = hex4(bytes, hex_start) else {
                return Err(bad_u);
            };
            pos = hex_start + 4;
            let mut code = high;
            if (0xd800..=0xdbff).contains(&high)
                && pos + 6 < len
                && bytes[pos] == b'\\'
                && bytes[pos + 1] == b'u'
            {
                let Some(low) = hex4(bytes, pos + 2) else {
                    return Err(JsonError::Decode {
                        msg: "Invalid \\uXXXX escape",
                        pos: pos + 1,
                    });
                };
                if (0xdc00..=0xdfff).contains(&low) {
                    code = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
                    pos += 6;
                }
            }
            // A lone surrogate is a valid Python str but not a Rust one: U+FFFD stands in for it.
            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
        }
    }

    /// CPython `_match_number_unicode`: the longest JSON number at `start`, else `StopIteration`.
    fn match_number(&self, start: usize) -> Result<(PyValue, usize), JsonError> {
        let bytes = self.bytes;
        let len = bytes.len();
        let digit_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let mut idx = start;
        if bytes.get(idx) == Some(&b'-') {
            idx += 1;
        }
        match bytes.get(idx) {
            Some(b'1'..=b'9') => {
                idx += 1;
                while digit_at(idx) {
                    idx += 1;
                }
            }
            Some(b'0') => idx += 1,
            _ => return Err(expecting_value(start)),
        }
        let mut is_float = false;
        // A fraction needs a digit after the dot: `1.` is the int 1 followed by junk.
        if bytes.get(idx) == Some(&b'.') && digit_at(idx + 1) {
            is_float = true;
            idx += 2;
            while digit_at(idx) {
                idx += 1;
            }
        }
        // An exponent needs a digit; otherwise the scanner backtracks to before the `e`.
        if idx + 1 < len && matches!(bytes[idx], b'e' | b'E') {
            let e_start = idx;
            idx += 1;
            if idx + 1 < len && matches!(bytes[idx], b'-' | b'+') {
                idx += 1;
            }
            while digit_at(idx) {
                idx += 1;
            }
            if bytes[idx - 1].is_ascii_digit() {
                is_float = true;
            } else {
                idx = e_start;
            }
        }
        let literal = self.text.get(start..idx).unwrap_or_default();
        if is_float {
            // Rust's parse rounds correctly like CPython's `float()`; overflow gives ±inf.
            let value = literal.parse::<f64>().unwrap_or(f64::NAN);
            return Ok((PyValue::Float(value), idx));
        }
        let negative = literal.starts_with('-');
        let digits = literal.trim_start_matches('-');
        if digits.len() > INT_MAX_STR_DIGITS {
            return Err(JsonError::IntTooLong {
                digits: digits.len(),
            });
        }
        let canonical = if negative && digits != "0" {
            format!("-{digits}")
        } else {
            digits.to_owned()
        };
        Ok((PyValue::Int(canonical), idx))
    }
}

fn expecting_value(pos: usize) -> JsonError {
    JsonError::Decode {
        msg: "Expecting value",
        pos,
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn msg(text: &str) -> String {
        loads(text).unwrap_err().python_message(text)
    }

    #[test]
    fn error_messages_match_cpython() {
        assert_eq!(msg(""), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(msg("ls -la"), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(
            msg("{\"a\" 1}"),
            "Expecting ':' delimiter: line 1 column 6 (char 5)"
        );
        assert_eq!(
            msg("{\"a\":1,}"),
            "Expecting property name enclosed in double quotes: line 1 column 8 (char 7)"
        );
        assert_eq!(msg("[1,]"), "Expecting value: line 1 column 4 (char 3)");
        assert_eq!(msg("{} x"), "Extra data: line 1 column 4 (char 3)");
        assert_eq!(
            msg("\"abc"),
            "Unterminated string starting at: line 1 column 1 (char 0)"
        );
        assert_eq!(
            msg("[1,\n 2 3]"),
            "Expecting ',' delimiter: line 2 column 4 (char 7)"
        );
        assert_eq!(msg("\"\\x\""), "Invalid \\escape: line 1 column 2 (char 1)");
        assert_eq!(
            msg("\"\\u12\""),
            "Invalid \\uXXXX escape: line 1 column 3 (char 2)"
        );
        assert_eq!(
            msg("\"a\u{1}\""),
            "Invalid control character at: line 1 column 3 (char 2)"
        );
        assert_eq!(msg("1."), "Extra data: line 1 column 2 (char 1)");
        assert_eq!(msg("01"), "Extra data: line 1 column 2 (char 1)");
        // Character (not byte) positions, like Python.
        assert_eq!(msg("\"é\" x"), "Extra data: line 1 column 5 (char 4)");
    }

    #[test]
    fn decodes_python_extensions_and_numbers() {
        assert!(matches!(loads("NaN").unwrap(), PyValue::Float(f) if f.is_nan()));
        assert_eq!(
            loads("-Infinity").unwrap(),
            PyValue::Float(f64::NEG_INFINITY)
        );
        assert_eq!(loads("-0").unwrap(), PyValue::Int("0".into()));
        assert_eq!(
            loads("123456789012345678901234567890").unwrap(),
            PyValue::Int("123456789012345678901234567890".into())
        );
        assert_eq!(loads("1e400").unwrap(), PyValue::Float(f64::INFINITY));
        assert_eq!(loads("1E+2").unwrap(), PyValue::Float(100.0));
        assert!(loads("1e").is_err());
        assert_eq!(
            loads("\"\\ud83d\\ude00\"").unwrap(),
            PyValue::Str("😀".into())
        );
        assert_eq!(
            loads("\"\\ud83d x\"").unwrap(),
            PyValue::Str("\u{fffd} x".into())
        );
    }

    #[test]
    fn repeated_key_keeps_first_position_and_last_value() {
        assert_eq!(
            loads(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap(),
            PyValue::Dict(vec![
                ("b".into(), PyValue::Int("3".into())),
                ("a".into(), PyValue::Int("2".into())),
            ])
        );
    }

    #[test]
    fn deep_nesting_is_a_recursion_error_not_a_crash() {
        let text = "[".repeat(5000);
        assert_eq!(loads(&text).unwrap_err(), JsonError::Recursion);
    }

    #[test]
    fn long_int_is_a_value_error() {
        let text = "1".repeat(4301);
        assert_eq!(
            loads(&text).unwrap_err(),
            JsonError::IntTooLong { digits: 4301 }
        );
        assert!(loads(&"1".repeat(4300)).is_ok());
    }

    #[test]
    fn raw_decode_does_not_skip_leading_whitespace() {
        assert!(raw_decode(" {}", 0).is_err());
        assert_eq!(raw_decode("x{} y", 1).unwrap(), (PyValue::Dict(vec![]), 3));
    }
}
