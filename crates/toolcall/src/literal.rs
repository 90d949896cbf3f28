//! The subset of Python's `ast.literal_eval` the GLM and Qwen3-Coder parsers rely on.
//!
//! Those parsers try `json.loads`, then `ast.literal_eval`, then keep the raw text, so a value such
//! as `(1, 2)`, `True`, `'single quoted'` or `{'a': None}` must decode as Python would. Supported:
//! int (decimal, `0x`/`0o`/`0b`, underscores, arbitrary size) and float literals with one optional
//! sign, str literals (single/double/triple quotes, `r`/`u` prefixes, escapes, implicit
//! concatenation), `True`/`False`/`None`, and tuples (as lists, which is what `json.dumps` makes of
//! them), lists and dicts of those.
//!
//! Anything else is "not a literal" and the caller falls back to the raw string. That includes
//! sets, bytes, complex numbers, `...` and tuple dict keys, which Python *does* evaluate but which
//! `json.dumps` then refuses with `TypeError`, failing the reference's whole parse; keeping the
//! text is the deliberate, documented deviation. Unhashable keys (`{[1]: 2}`) are a `TypeError`
//! inside `literal_eval` in Python too, so they are "not a literal" in both.

use crate::pyjson::{INT_MAX_STR_DIGITS, PyValue};
use crate::python::float_repr;

/// CPython's parser refuses deeper bracket nesting ("too many nested parentheses").
const MAX_NESTING: usize = 200;

/// `ast.literal_eval(text)` for the supported subset; `None` when Python would raise (or when the
/// result is outside the subset, see the module docs).
pub(crate) fn literal_eval(text: &str) -> Option<PyValue> {
    // literal_eval strips leading spaces and tabs before parsing; NUL is a syntax error.
    let text = text.trim_start_matches([' ', '\t']);
    if text.contains('\0') {
        return None;
    }
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    parser.skip_blank_lines();
    let value = parser.testlist()?;
    parser.skip_blank_lines();
    (parser.pos == parser.chars.len()).then_some(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Open brackets; inside them newlines are insignificant (implicit line joining).
    depth: usize,
}

/// A dict key as Python compares it: `1 == 1.0 == True` and `0 == False` are the same key.
#[derive(Debug, PartialEq)]
enum KeyIdentity {
    Str(String),
    Number(String),
    NotANumber,
    None,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// Skips spaces, comments, backslash continuations and, inside brackets, newlines.
    fn skip_trivia(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\u{c}' => self.pos += 1,
                '\n' | '\r' if self.depth > 0 => self.pos += 1,
                '\\' if matches!(self.peek_at(1), Some('\n' | '\r')) => self.pos += 2,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// Blank lines and comments around the whole expression are insignificant in eval mode.
    fn skip_blank_lines(&mut self) {
        self.depth += 1;
        self.skip_trivia();
        self.depth -= 1;
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_trivia();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `expr (',' expr)* [',']`: a bare comma list is a tuple.
    fn testlist(&mut self) -> Option<PyValue> {
        let first = self.expr()?;
        if !self.eat(',') {
            return Some(first);
        }
        let mut items = vec![first];
        loop {
            self.skip_trivia();
            if self.peek().is_none() {
                break;
            }
            items.push(self.expr()?);
            if !self.eat(',') {
                break;
            }
        }
        Some(PyValue::List(items))
    }

    fn open(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_NESTING).then_some(())
    }

    fn expr(&mut self) -> Option<PyValue> {
        self.skip_trivia();
        match self.peek()? {
            '[' => {
                self.pos += 1;
                self.open()?;
                let items = self.sequence(']')?;
                self.depth -= 1;
                Some(PyValue::List(items))
            }
            '(' => {
                self.pos += 1;
                self.open()?;
                let value = self.paren()?;
                self.depth -= 1;
                Some(value)
            }
            '{' => {
                self.pos += 1;
                self.open()?;
                let value = self.dict()?;
                self.depth -= 1;
                Some(value)
            }
            '+' | '-' => {
                let negative = self.peek() == Some('-');
                self.pos += 1;
                self.skip_trivia();
                // Only a number literal may follow one sign (`-True`, `--1` are malformed nodes).
                match self.number()? {
                    PyValue::Int(digits) if negative && digits != "0" => {
                        Some(PyValue::Int(format!("-{digits}")))
                    }
                    PyValue::Float(f) if negative => Some(PyValue::Float(-f)),
                    other => Some(other),
                }
            }
            '0'..='9' | '.' => self.number(),
            '\'' | '"' => self.strings(),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let word = self.identifier();
                if matches!(self.peek(), Some('\'' | '"')) {
                    // A string prefix: r/u are plain str; b, f and friends are not in the subset.
                    return match word.as_str() {
                        "r" | "R" | "u" | "U" => {
                            self.pos -= word.chars().count();
                            self.strings()
                        }
                        _ => None,
                    };
                }
                match word.as_str() {
                    "True" => Some(PyValue::Bool(true)),
                    "False" => Some(PyValue::Bool(false)),
                    "None" => Some(PyValue::None),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        self.chars
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .collect()
    }

    /// Comma-separated values up to `close`, trailing comma allowed.
    fn sequence(&mut self, close: char) -> Option<Vec<PyValue>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.expr()?);
            if self.eat(close) {
                return Some(items);
            }
            if !self.eat(',') {
                return None;
            }
        }
    }

    /// `()` is an empty tuple, `(x)` is `x`, `(x,)` and `(x, y)` are tuples.
    fn paren(&mut self) -> Option<PyValue> {
        if self.eat(')') {
            return Some(PyValue::List(Vec::new()));
        }
        let first = self.expr()?;
        if self.eat(')') {
            return Some(first);
        }
        if !self.eat(',') {
            return None;
        }
        let mut items = vec![first];
        items.extend(self.sequence(')')?);
        Some(PyValue::List(items))
    }

    fn dict(&mut self) -> Option<PyValue> {
        let mut pairs: Vec<(String, PyValue)> = Vec::new();
        let mut identities: Vec<KeyIdentity> = Vec::new();
        if self.eat('}') {
            return Some(PyValue::Dict(pairs));
        }
        loop {
            let key = self.expr()?;
            // `{1, 2}` is a set: outside the subset.
            if !self.eat(':') {
                return None;
            }
            let value = self.expr()?;
            let (identity, text) = dict_key(&key)?;
            match identities.iter().position(|seen| *seen == identity) {
                // Python keeps the first key object and takes the last value.
                Some(at) => {
                    if let Some(slot) = pairs.get_mut(at) {
                        slot.1 = value;
                    }
                }
                None => {
                    identities.push(identity);
                    pairs.push((text, value));
                }
            }
            if self.eat('}') {
                return Some(PyValue::Dict(pairs));
            }
            if !self.eat(',') {
                return None;
            }
            if self.eat('}') {
                return Some(PyValue::Dict(pairs));
            }
        }
    }

    /// One number literal (no sign). Imaginary literals are outside the subset.
    fn number(&mut self) -> Option<PyValue> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || (matches!(self.peek(), Some('+' | '-'))
                && matches!(self.chars.get(self.pos.wrapping_sub(1)), Some('e' | 'E'))
                && self.is_decimal_exponent(start))
        {
            self.pos += 1;
        }
        let token: String = self.chars.get(start..self.pos)?.iter().collect();
        parse_number(&token)
    }

    /// Whether the `e` just before the cursor is a decimal exponent (not a hex digit).
    fn is_decimal_exponent(&self, start: usize) -> bool {
        let token: String = self
            .chars
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .collect();
        !token.starts_with("0x") && !token.starts_with("0X")
    }

    /// Adjacent string literals concatenate (`'a' "b"` is `'ab'`).
    fn strings(&mut self) -> Option<PyValue> {
        let mut out = String::new();
        loop {
            self.skip_trivia();
            let raw = match self.peek() {
                Some('r' | 'R') => {
                    self.pos += 1;
                    true
                }
                Some('u' | 'U') => {
                    self.pos += 1;
                    false
                }
                Some('\'' | '"') => false,
                _ => break,
            };
            if !matches!(self.peek(), Some('\'' | '"')) {
                return None;
            }
            out.push_str(&self.string_body(raw)?);
        }
        Some(PyValue::Str(out))
    }

    fn string_body(&mut self, raw: bool) -> Option<String> {
        let quote = self.peek()?;
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            if c == quote {
                if !triple {
                    self.pos += 1;
                    return Some(out);
                }
                if self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote) {
                    self.pos += 3;
                    return Some(out);
                }
                out.push(c);
                self.pos += 1;
                continue;
            }
            if matches!(c, '\n' | '\r') && !triple {
                return None;
            }
            if c != '\\' {
                out.push(c);
                self.pos += 1;
                continue;
            }
            let next = self.peek_at(1)?;
            if raw {
                // A raw string keeps the backslash; it only stops the quote from ending the string.
                out.push('\\');
                out.push(next);
                self.pos += 2;
                continue;
            }
            self.pos += 2;
            match next {
                '\n' => {}
                '\r' => {
                    if self.peek() == Some('\n') {
                        self.pos += 1;
                    }
                }
                '\\' | '\'' | '"' => out.push(next),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'v' => out.push('\u{b}'),
                '0'..='7' => {
                    let mut code = next.to_digit(8)?;
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                code = code * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(code)?);
                }
                'x' => out.push(self.hex_escape(2)?),
                'u' => out.push(self.unicode_escape()?),
                'U' => out.push(self.hex_escape(8)?),
                // \N{NAME} needs the Unicode name table: outside the subset.
                'N' => return None,
                // Unknown escapes keep the backslash (a warning in Python, not an error).
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    /// `\uXXXX`; a high surrogate directly followed by a low one is joined into one character
    /// (Python keeps two lone surrogates, which no UTF-8 consumer can take anyway).
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex_code(4)?;
        if (0xd800..=0xdbff).contains(&high)
            && self.peek() == Some('\\')
            && self.peek_at(1) == Some('u')
        {
            let saved = self.pos;
            self.pos += 2;
            match self.hex_code(4) {
                Some(low) if (0xdc00..=0xdfff).contains(&low) => {
                    return char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00));
                }
                _ => self.pos = saved,
            }
        }
        Some(char::from_u32(high).unwrap_or('\u{fffd}'))
    }

    fn hex_escape(&mut self, len: usize) -> Option<char> {
        // A lone surrogate is a valid Python str but not a Rust one: U+FFFD stands in for it.
        Some(char::from_u32(self.hex_code(len)?).unwrap_or('\u{fffd}'))
    }

    fn hex_code(&mut self, len: usize) -> Option<u32> {
        let digits: String = self.chars.get(self.pos..self.pos + len)?.iter().collect();
        let code = u32::from_str_radix(&digits, 16).ok()?;
        if !digits.chars().all(|c| c.is_ascii_hexdigit()) || code > 0x10ffff {
            return None;
        }
        self.pos += len;
        Some(code)
    }
}

/// The identity Python hashes a dict key by, and the text `json.dumps` writes for it.
fn dict_key(key: &PyValue) -> Option<(KeyIdentity, String)> {
    match key {
        PyValue::Str(s) => Some((KeyIdentity::Str(s.clone()), s.clone())),
        PyValue::None => Some((KeyIdentity::None, "null".to_owned())),
        PyValue::Bool(b) => Some((
            KeyIdentity::Number(if *b { "1" } else { "0" }.to_owned()),
            if *b { "true" } else { "false" }.to_owned(),
        )),
        PyValue::Int(digits) => Some((KeyIdentity::Number(digits.clone()), digits.clone())),
        PyValue::Float(f) => {
            let identity = if f.is_nan() {
                KeyIdentity::NotANumber
            } else if f.is_finite() && f.fract() == 0.0 {
                // An integral float equals the int of the same value (`1.0 == 1`).
                let digits = format!("{f:.0}");
                KeyIdentity::Number(if digits == "-0" {
                    "0".to_owned()
                } else {
                    digits
                })
            } else {
                KeyIdentity::Number(float_repr(*f))
            };
            let text = if f.is_nan() {
                "NaN".to_owned()
            } else if f.is_infinite() {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
            } else {
                float_repr(*f)
            };
            Some((identity, text))
        }
        // Lists and dicts are unhashable (TypeError); tuples are outside the subset.
        PyValue::List(_) | PyValue::Dict(_) => None,
    }
}

/// A Python number token (no sign) as an int or float value.
fn parse_number(token: &str) -> Option<PyValue> {
    let lower = token.to_ascii_lowercase();
    let radix = match lower.get(..2) {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let body = lower.get(2..)?;
        let digits = underscored_digits(body, |c| c.is_digit(radix))?;
        return Some(PyValue::Int(to_decimal(&digits, radix)?));
    }
    if lower.ends_with('j') {
        return None;
    }
    let is_float = lower.contains(['.', 'e']);
    if !is_float {
        let digits = underscored_digits(&lower, |c| c.is_ascii_digit())?;
        // Decimal ints may not have leading zeros, except for zero itself (`00` is fine).
        if digits.len() > 1 && digits.starts_with('0') && digits.chars().any(|c| c != '0') {
            return None;
        }
        if digits.len() > INT_MAX_STR_DIGITS {
            return None;
        }
        let trimmed = digits.trim_start_matches('0');
        return Some(PyValue::Int(
            if trimmed.is_empty() { "0" } else { trimmed }.to_owned(),
        ));
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let int_digits = if int_part.is_empty() {
        String::new()
    } else {
        underscored_digits(int_part, |c| c.is_ascii_digit())?
    };
    let frac_digits = match frac_part {
        Some("") | None => String::new(),
        Some(f) => underscored_digits(f, |c| c.is_ascii_digit())?,
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let mut normalized = format!(
        "{}.{}",
        if int_digits.is_empty() {
            "0"
        } else {
            &int_digits
        },
        if frac_digits.is_empty() {
            "0"
        } else {
            &frac_digits
        }
    );
    if let Some(exponent) = exponent {
        let (sign, digits) = match exponent.strip_prefix(['+', '-']) {
            Some(rest) => (exponent.get(..1).unwrap_or_default(), rest),
            None => ("", exponent),
        };
        let digits = underscored_digits(digits, |c| c.is_ascii_digit())?;
        normalized = format!("{normalized}e{sign}{digits}");
    }
    normalized.parse::<f64>().ok().map(PyValue::Float)
}

/// Digits with single underscores between them (`1_000`), underscores removed.
fn underscored_digits(text: &str, is_digit: impl Fn(char) -> bool) -> Option<String> {
    if text.is_empty() || text.starts_with('_') || text.ends_with('_') || text.contains("__") {
        return None;
    }
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    digits.chars().all(is_digit).then_some(digits)
}

/// Digits in `radix` as canonical decimal, without size limit.
fn to_decimal(digits: &str, radix: u32) -> Option<String> {
    // Little-endian limbs in base 10^9.
    const BASE: u64 = 1_000_000_000;
    let mut limbs: Vec<u64> = vec![0];
    for c in digits.chars() {
        let mut carry = u64::from(c.to_digit(radix)?);
        for limb in &mut limbs {
            let value = *limb * u64::from(radix) + carry;
            *limb = value % BASE;
            carry = value / BASE;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut out = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&limb.to_string());
        } else {
            out.push_str(&format!("{limb:09}"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::python::dumps;

    fn json_of(text: &str) -> Option<String> {
        literal_eval(text).map(|v| dumps(&v, false, false))
    }

    #[test]
    fn python_literals_become_their_json_form() {
        let cases = [
            ("(1, 2)", "[1, 2]"),
            ("True", "true"),
            ("None", "null"),
            ("'single'", "\"single\""),
            (
                "{'a': None, 'b': [1, 2.5]}",
                "{\"a\": null, \"b\": [1, 2.5]}",
            ),
            ("1, 2", "[1, 2]"),
            ("(1,)", "[1]"),
            ("()", "[]"),
            ("((1))", "1"),
            ("-1", "-1"),
            ("+1.5", "1.5"),
            ("0x1F", "31"),
            ("0o17", "15"),
            ("0b101", "5"),
            ("1_000", "1000"),
            ("1.", "1.0"),
            (".5", "0.5"),
            ("1e3", "1000.0"),
            ("1e999", "Infinity"),
            ("'a' \"b\"", "\"ab\""),
            ("r'\\n'", "\"\\\\n\""),
            ("'\\x41\\u00e9\\101'", "\"AéA\""),
            ("[1,\n 2]", "[1, 2]"),
            ("[1, # comment\n 2]", "[1, 2]"),
            ("'''a\nb'''", "\"a\\nb\""),
            ("{1: 'a', True: 'b', 1.0: 'c'}", "{\"1\": \"c\"}"),
            ("{1: 'a', '1': 'b'}", "{\"1\": \"a\", \"1\": \"b\"}"),
            (
                "{None: 1, 2.5: 2, False: 3}",
                "{\"null\": 1, \"2.5\": 2, \"false\": 3}",
            ),
            ("0xFFFFFFFFFFFFFFFFFFFF", "1208925819614629174706175"),
        ];
        for (text, want) in cases {
            assert_eq!(json_of(text).as_deref(), Some(want), "{text:?}");
        }
    }

    #[test]
    fn non_literals_and_unsupported_literals_are_rejected() {
        for text in [
            "true",
            "null",
            "ls -la",
            "1 +",
            "--1",
            "-True",
            "f(1)",
            "{1, 2}",
            "b'x'",
            "1j",
            "...",
            "{[1]: 2}",
            "'unterminated",
            "01",
            "1__0",
            "[1",
            "x = 1",
            "1 2",
            "'a\nb'",
            "f'x'",
            "'\\N{DASH}'",
        ] {
            assert_eq!(literal_eval(text), None, "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing() {
        assert_eq!(literal_eval(&"[".repeat(100_000)), None);
        assert!(literal_eval(&format!("{}{}", "[".repeat(150), "]".repeat(150))).is_some());
    }
}
