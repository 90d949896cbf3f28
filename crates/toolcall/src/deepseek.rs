//! DeepSeek formats: `deepseek_v3`, `deepseek_v3_1` (alias `deepseek_v31`) and `deepseek_v4`
//! (alias `deepseek_dsml`), as MAIN04's `deepseek_v3_parser.py` / `deepseek_v3_1_parser.py` and
//! UP's `deepseek_v4_parser.py`.
//!
//! Reference behaviour (strict):
//! - v3 and v3.1 need `<｜tool▁calls▁begin｜>` (fullwidth `｜`, U+2581 `▁`) in the text and take
//!   the content before it; with the begin token but no complete call block the text passes
//!   through;
//! - v3 (MAIN04, #989/#1300): `<｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\s*```json\s*ARGS\s*```\s*
//!   <｜tool▁call▁end｜>`, non-greedy, DOTALL, any number of calls (PR's variant wanted literal
//!   `\n` and was greedy). Name and arguments are stripped; arguments are the raw text;
//! - v3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>` (DOTALL), raw arguments;
//! - v4 (DSML) needs `<｜DSML｜` or `< | DSML |` in the text; a call is `tool_call_begin` (fullwidth,
//!   or ASCII with optional spaces), a name without newline, `<` or `|`, then a ```json fenced
//!   body or a bare `{…}` without nested braces, then `tool_call_end`. An empty fenced body gives
//!   `"{}"`, a blank name skips the call, and content is the text before the first *call* (so a
//!   `tool_calls_begin` token before it stays in the content).
//!
//! Lenient mode only drops (and counts) v3/v3.1 calls with a blank name; these formats close every
//! call with an end token, so there is no truncated JSON to repair.

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{
    Collector, PY_WS, content_before, literal_regex, make_uuid_id, py_strip,
    split_content_from_first_marker,
};
use crate::{Mode, Parsed, Parser, ToolCall};

const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";

static V3_CALL: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(&format!(
        r"(?s)<｜tool▁call▁begin｜>(?P<type>.*?)<｜tool▁sep｜>(?P<name>.*?){PY_WS}*```json{PY_WS}*(?P<args>.*?){PY_WS}*```{PY_WS}*<｜tool▁call▁end｜>"
    ))
});

static V3_1_CALL: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(
        r"(?s)<｜tool▁call▁begin｜>(?P<name>.*?)<｜tool▁sep｜>(?P<args>.*?)<｜tool▁call▁end｜>",
    )
});

static V4_CALL: LazyLock<Regex> = LazyLock::new(|| {
    let ascii = |what: &str| format!(r"<{PY_WS}*\|{PY_WS}*DSML{PY_WS}*\|{PY_WS}*{what}{PY_WS}*>");
    let begin = format!(
        "(?:<｜DSML｜tool.call.begin｜>|{})",
        ascii("tool.call.begin")
    );
    let end = format!("(?:<｜DSML｜tool.call.end｜>|{})", ascii("tool.call.end"));
    literal_regex(&format!(
        r"(?s){begin}{PY_WS}*(?P<name>[^\n<|]+?){PY_WS}*(?:```json{PY_WS}*(?P<json_args>.*?){PY_WS}*```|(?P<raw_args>\{{[^}}]*\}})){PY_WS}*{end}"
    ))
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V3,
    V3_1,
    V4,
}

#[derive(Debug)]
pub(crate) struct DeepSeek {
    name: &'static str,
    version: Version,
}

pub(crate) static DEEPSEEK_V3: DeepSeek = DeepSeek {
    name: "deepseek_v3",
    version: Version::V3,
};
pub(crate) static DEEPSEEK_V3_1: DeepSeek = DeepSeek {
    name: "deepseek_v3_1",
    version: Version::V3_1,
};
pub(crate) static DEEPSEEK_V31: DeepSeek = DeepSeek {
    name: "deepseek_v31",
    version: Version::V3_1,
};
pub(crate) static DEEPSEEK_V4: DeepSeek = DeepSeek {
    name: "deepseek_v4",
    version: Version::V4,
};
pub(crate) static DEEPSEEK_DSML: DeepSeek = DeepSeek {
    name: "deepseek_dsml",
    version: Version::V4,
};

impl DeepSeek {
    fn parse_v3(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(CALLS_BEGIN) {
            return Parsed::pass_through(text);
        }
        let pattern = if self.version == Version::V3 {
            &*V3_CALL
        } else {
            &*V3_1_CALL
        };
        let mut out = Collector::new(mode);
        for caps in pattern.captures_iter(text) {
            let field = |name: &str| caps.name(name).map_or("", |m| m.as_str());
            out.accept(ToolCall {
                id: make_uuid_id(),
                name: py_strip(field("name")).to_owned(),
                arguments: py_strip(field("args")).to_owned(),
            });
        }
        out.finish(text, || {
            split_content_from_first_marker(text, CALLS_BEGIN).0
        })
    }

    fn parse_v4(text: &str, mode: Mode) -> Parsed {
        if !text.contains("<｜DSML｜") && !text.contains("< | DSML |") {
            return Parsed::pass_through(text);
        }
        let mut out = Collector::new(mode);
        let mut first_start = None;
        for caps in V4_CALL.captures_iter(text) {
            if first_start.is_none() {
                first_start = caps.get(0).map(|m| m.start());
            }
            let name = py_strip(caps.name("name").map_or("", |m| m.as_str()));
            // `group("json_args") or group("raw_args") or "{}"`: an empty fence falls through.
            let arguments = [caps.name("json_args"), caps.name("raw_args")]
                .into_iter()
                .flatten()
                .map(|m| m.as_str())
                .find(|s| !s.is_empty())
                .unwrap_or("{}");
            if name.is_empty() {
                continue;
            }
            out.accept(ToolCall {
                id: make_uuid_id(),
                name: name.to_owned(),
                arguments: py_strip(arguments).to_owned(),
            });
        }
        out.finish(text, || {
            first_start.and_then(|idx| content_before(text, idx))
        })
    }
}

impl Parser for DeepSeek {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        match self.version {
            Version::V3 | Version::V3_1 => self.parse_v3(text, mode),
            Version::V4 => Self::parse_v4(text, mode),
        }
    }
}
