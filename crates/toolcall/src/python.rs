//! Python's text forms of decoded values: `json.dumps`, `str()` and `repr()`.
//!
//! Tool-call arguments reach the model and the trainer as text, so parity with the reference means
//! printing exactly what CPython prints: `json.dumps` default separators (`", "`, `": "`), `float`
//! repr (`1e+16`, `1e-05`, `100000.0`), `NaN`/`Infinity`, `ensure_ascii` escapes with surrogate
//! pairs, and `str()`/`repr()` of containers (`['a', 1]`, `{'a': None}`).

use crate::pyjson::PyValue;

/// Python `json.dumps(value, ensure_ascii=..)`: separators `", "` and `": "`, keys in the map's
/// order.
///
/// `serde_json::Map` here is sorted by key (the workspace does not enable `preserve_order`), so
/// keys come out sorted; the parsers themselves keep the model's key order through their own
/// ordered value type. Integers print exactly; floats use Python's `repr` (`1e+16`, `0.0001`).
pub fn python_json(value: &serde_json::Value, ensure_ascii: bool) -> String {
    dumps(&from_serde(value), ensure_ascii, false)
}

/// Python `str()` of the decoded value: a top-level string is itself; everything else is its
/// `repr` (`None`, `True`, `[1, 2]`, `{'a': 1}`, `["it's"]`).
///
/// Strings inside containers are escaped like CPython's `repr`, which escapes characters that are
/// not `str.isprintable()`. That test needs the Unicode category table; this crate knows the
/// control, format, separator, private-use and noncharacter ranges, and prints other unassigned
/// code points as they are where Python would escape them.
pub fn python_str(value: &serde_json::Value) -> String {
    py_str(&from_serde(value))
}

/// Python `repr()` of a list of strings, e.g. `['a', 'b']` (the unknown-tool message's
/// `Available tools: [...]` and the unknown-parser message's list).
pub fn python_repr_str_list(items: &[&str]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_str_repr(&mut out, item);
    }
    out.push(']');
    out
}

/// `json.dumps` of an internal value; `sort_keys` as Python's flag (stable for repeated keys).
pub(crate) fn dumps(value: &PyValue, ensure_ascii: bool, sort_keys: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, value, ensure_ascii, sort_keys);
    out
}

fn write_json(out: &mut String, value: &PyValue, ensure_ascii: bool, sort_keys: bool) {
    match value {
        PyValue::None => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(digits) => out.push_str(digits),
        PyValue::Float(f) => out.push_str(&json_float(*f)),
        PyValue::Str(s) => push_json_string(out, s, ensure_ascii),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item, ensure_ascii, sort_keys);
            }
            out.push(']');
        }
        PyValue::Dict(pairs) => {
            let mut ordered: Vec<&(String, PyValue)> = pairs.iter().collect();
            if sort_keys {
                ordered.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in ordered.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_json_string(out, key, ensure_ascii);
                out.push_str(": ");
                write_json(out, item, ensure_ascii, sort_keys);
            }
            out.push('}');
        }
    }
}

/// `float.__repr__` as `json.dumps` uses it, with JSON's names for the non-finite values.
fn json_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        float_repr(f)
    }
}

/// CPython `float.__repr__` (`repr` mode `'r'`): the shortest round-tripping digits, printed with
/// an exponent when the decimal point position is `<= -4` or `> 16`.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits as Python's repr (both pick the
    // closest of the shortest candidates); only the layout differs.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let decpt = exponent + 1;
    let sign = if f < 0.0 { "-" } else { "" };
    let ndigits = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp = decpt - 1;
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}e{exp_sign}{:02}", exp.abs())
    } else if decpt <= 0 {
        let zeros = "0".repeat(usize::try_from(-decpt).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    } else if decpt >= ndigits {
        let zeros = "0".repeat(usize::try_from(decpt - ndigits).unwrap_or(0));
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (int_part, frac_part) = digits.split_at(usize::try_from(decpt).unwrap_or(0));
        format!("{sign}{int_part}.{frac_part}")
    }
}

/// `json.encoder.py_encode_basestring(_ascii)`.
fn push_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            // ensure_ascii escapes everything outside ' '..='~', DEL included.
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python `str(value)`.
pub(crate) fn py_str(value: &PyValue) -> String {
    match value {
        PyValue::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python `repr(value)` of the object `json.loads` (or `ast.literal_eval`) would build.
pub(crate) fn py_repr(value: &PyValue) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &PyValue) {
    match value {
        PyValue::None => out.push_str("None"),
        PyValue::Bool(true) => out.push_str("True"),
        PyValue::Bool(false) => out.push_str("False"),
        PyValue::Int(digits) => out.push_str(digits),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => push_str_repr(out, s),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        PyValue::Dict(pairs) => {
            out.push('{');
            for (i, (key, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_str_repr(out, key);
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// CPython `unicode_repr`: single quotes unless the text has `'` and no `"`.
fn push_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            c if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_ascii() || is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// An approximation of `str.isprintable` for non-ASCII characters: false for the Unicode
/// categories Python escapes (Cc, Cf, Co, Zs, Zl, Zp and noncharacters). Unassigned code points
/// (Cn) other than noncharacters count as printable here: their table changes with every Unicode
/// version and the std library has none.
fn is_printable(c: char) -> bool {
    let cp = c as u32;
    let not_printable = matches!(cp,
        // Cc (C1 controls)
        0x80..=0x9f
        // Zs other than ' ', Zl, Zp
        | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029 | 0x202f | 0x205f | 0x3000
        // Cf
        | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff
        | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f
        // Co
        | 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd
        // Cn noncharacters
        | 0xfdd0..=0xfdef
    );
    !not_printable && (cp & 0xfffe) != 0xfffe
}

/// A `serde_json::Value` as the Python object `json.loads` would give for its text.
pub(crate) fn from_serde(value: &serde_json::Value) -> PyValue {
    match value {
        serde_json::Value::Null => PyValue::None,
        serde_json::Value::Bool(b) => PyValue::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                PyValue::Int(i.to_string())
            } else if let Some(u) = n.as_u64() {
                PyValue::Int(u.to_string())
            } else {
                PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => PyValue::Str(s.clone()),
        serde_json::Value::Array(items) => PyValue::List(items.iter().map(from_serde).collect()),
        serde_json::Value::Object(map) => PyValue::Dict(
            map.iter()
                .map(|(k, v)| (k.clone(), from_serde(v)))
                .collect(),
        ),
    }
}

/// The nearest `serde_json::Value`: integers beyond 64 bits become floats and non-finite floats
/// become `null` (JSON, unlike Python, has neither); maps come out sorted by key.
pub(crate) fn to_serde(value: &PyValue) -> serde_json::Value {
    match value {
        PyValue::None => serde_json::Value::Null,
        PyValue::Bool(b) => serde_json::Value::Bool(*b),
        PyValue::Int(digits) => {
            if let Ok(i) = digits.parse::<i64>() {
                serde_json::Value::from(i)
            } else if let Ok(u) = digits.parse::<u64>() {
                serde_json::Value::from(u)
            } else {
                digits
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        PyValue::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        PyValue::Str(s) => serde_json::Value::String(s.clone()),
        PyValue::List(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        PyValue::Dict(pairs) => serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), to_serde(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::pyjson::loads;

    #[test]
    fn float_repr_matches_cpython() {
        let cases = [
            (1.0, "1.0"),
            (100000.0, "100000.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (std::f64::consts::PI, "3.141592653589793"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f:?}");
        }
    }

    #[test]
    fn dumps_keeps_key_order_and_python_separators() {
        let v = loads(r#"{"x":1,"a":[true,null,1.0,"é"],"m":{}}"#).unwrap();
        assert_eq!(
            dumps(&v, false, false),
            r#"{"x": 1, "a": [true, null, 1.0, "é"], "m": {}}"#
        );
        assert_eq!(
            dumps(&v, true, false),
            r#"{"x": 1, "a": [true, null, 1.0, "\u00e9"], "m": {}}"#
        );
        assert_eq!(
            dumps(&v, false, true),
            r#"{"a": [true, null, 1.0, "é"], "m": {}, "x": 1}"#
        );
    }

    #[test]
    fn ensure_ascii_uses_surrogate_pairs_and_escapes_del() {
        let v = PyValue::Str("😀\u{7f}\u{1}\u{8}".into());
        assert_eq!(dumps(&v, true, false), r#""\ud83d\ude00\u007f\u0001\b""#);
        assert_eq!(dumps(&v, false, false), "\"😀\u{7f}\\u0001\\b\"");
    }

    #[test]
    fn str_and_repr_match_python() {
        let v = loads(r#"[1, "a", null, true, {"k": "it's"}, 2.5, "\"q\"", "x'y\"z"]"#).unwrap();
        assert_eq!(
            py_str(&v),
            r#"[1, 'a', None, True, {'k': "it's"}, 2.5, '"q"', 'x\'y"z']"#
        );
        assert_eq!(py_str(&PyValue::Str("ls -la".into())), "ls -la");
        assert_eq!(
            py_repr(&PyValue::Str("tab\t\u{0}\u{a0}é\u{200b}\\".into())),
            "'tab\\t\\x00\\xa0é\\u200b\\\\'"
        );
    }

    #[test]
    fn repr_str_list_is_python_list_repr() {
        assert_eq!(python_repr_str_list(&["a", "b"]), "['a', 'b']");
        assert_eq!(python_repr_str_list(&[]), "[]");
    }
}
