//! `hermes`, `qwen` and `longcat`: JSON call objects inside `<tool_call>…</tool_call>` (longcat:
//! `<longcat_tool_call>`), as MAIN04's `hermes_parser.py`, `qwen_parser.py` (a subclass) and
//! `longcat_parser.py`.
//!
//! Reference behaviour (strict):
//! - payloads are matched by `<tool_call>\s*(.*?)\s*</tool_call>|<tool_call>\s*(.*)` (DOTALL); a
//!   trailing unclosed `<tool_call>{…}` counts, empty payloads are skipped, `<tool_call></tool_call>`
//!   alone passes through;
//! - all-or-nothing: one body that is not JSON (or a later call cut off by truncation), a `name`
//!   that is not a string, or a non-dict body the membership test raises on, returns the raw text;
//! - hermes/qwen skip a body without `name` (MAIN04's `if "name" not in tc_data: continue`; V08 and
//!   UP raise instead, i.e. pass through). longcat has no such check: a nameless body passes the
//!   whole text through;
//! - arguments are `json.dumps(tc.get("arguments", {}), ensure_ascii=False)`: missing → `"{}"`,
//!   `{"x":1}` → `{"x": 1}` with key order kept, a string is double-encoded (`"ls"` → `"\"ls\""`);
//! - content is the text before the first opening tag (a `<think>` block stays in it).
//!
//! Lenient mode additionally drops a malformed body (counted) and keeps the others, keeps string
//! arguments single-encoded (counted), and repairs the last payload when it is unclosed and cut
//! off: a truncated JSON prefix is closed (see `lenient`), and a complete body followed by a
//! partial closing tag (`{…}</tool_ca`) is accepted. A repaired call must still have a complete
//! string `name` and an `arguments` key.

use crate::common::{
    Collector, NameCheck, Payload, extract_tagged_payloads, make_uuid_id, name_check,
    split_content_from_first_marker,
};
use crate::lenient::{repair_truncated, value_before_cut_tag};
use crate::pyjson::{PyValue, loads};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

/// A tag-delimited JSON format.
#[derive(Debug)]
pub(crate) struct TaggedJson {
    name: &'static str,
    open: &'static str,
    close: &'static str,
    /// MAIN04's `"name" not in tc_data` check (hermes, qwen); longcat has none.
    skips_nameless: bool,
}

pub(crate) static HERMES: TaggedJson = TaggedJson {
    name: "hermes",
    open: "<tool_call>",
    close: "</tool_call>",
    skips_nameless: true,
};

pub(crate) static QWEN: TaggedJson = TaggedJson {
    name: "qwen",
    ..HERMES
};

pub(crate) static LONGCAT: TaggedJson = TaggedJson {
    name: "longcat",
    open: "<longcat_tool_call>",
    close: "</longcat_tool_call>",
    skips_nameless: false,
};

/// What the reference makes of one decoded body.
enum Body {
    Call {
        name: String,
        arguments: PyValue,
    },
    /// `"name" not in tc_data`: skipped without failing (hermes/qwen).
    Skipped,
    /// The reference raises here, failing the whole parse.
    Raises,
}

impl TaggedJson {
    fn classify(&self, value: PyValue) -> Body {
        match name_check(&value) {
            NameCheck::Present => {}
            NameCheck::Skip if self.skips_nameless => return Body::Skipped,
            // Without the membership test (longcat), `tc_data["name"]` raises for anything but a
            // dict with that key.
            NameCheck::Skip | NameCheck::Raises => return Body::Raises,
        }
        let PyValue::Dict(mut pairs) = value else {
            return Body::Raises;
        };
        let Some(PyValue::Str(name)) = pairs
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone())
        else {
            // pydantic rejects a non-string `Function.name`.
            return Body::Raises;
        };
        let arguments = match pairs.iter().position(|(k, _)| k == "arguments") {
            Some(at) => pairs.swap_remove(at).1,
            None => PyValue::Dict(Vec::new()),
        };
        Body::Call { name, arguments }
    }

    fn strict(&self, text: &str, payloads: &[Payload<'_>]) -> Parsed {
        let mut out = Collector::new(Mode::Strict);
        for payload in payloads {
            let Ok(value) = loads(payload.body) else {
                return Parsed::pass_through(text);
            };
            match self.classify(value) {
                Body::Call { name, arguments } => out.accept(ToolCall {
                    id: make_uuid_id(),
                    name,
                    arguments: dumps(&arguments, false, false),
                }),
                Body::Skipped => {}
                Body::Raises => return Parsed::pass_through(text),
            }
        }
        out.finish(text, || self.content(text))
    }

    fn lenient(&self, text: &str, payloads: &[Payload<'_>]) -> Parsed {
        let mut out = Collector::new(Mode::Lenient);
        let last = payloads.len().saturating_sub(1);
        for (i, payload) in payloads.iter().enumerate() {
            match loads(payload.body) {
                Ok(value) => match self.classify(value) {
                    Body::Call { name, arguments } => {
                        let arguments = lenient_arguments(&mut out, arguments);
                        out.accept(ToolCall {
                            id: make_uuid_id(),
                            name,
                            arguments,
                        });
                    }
                    Body::Skipped | Body::Raises => out.drop_malformed(),
                },
                Err(_) if i == last && !payload.closed => match self.recover(payload.body) {
                    Some((name, arguments)) => {
                        let arguments = lenient_arguments(&mut out, arguments);
                        out.accept_recovered(ToolCall {
                            id: make_uuid_id(),
                            name,
                            arguments,
                        });
                    }
                    None => out.drop_malformed(),
                },
                Err(_) => out.drop_malformed(),
            }
        }
        out.finish(text, || self.content(text))
    }

    /// A cut-off last body made whole, if it still names its tool (and, when the JSON itself was
    /// cut, still carries its arguments: a cut before them would run the tool with none).
    fn recover(&self, body: &str) -> Option<(String, PyValue)> {
        let value = match value_before_cut_tag(body, self.close) {
            Some(value) => value,
            None => repair_truncated(body, Some("name"))
                .map(|repaired| repaired.value)
                .filter(|value| value.get("arguments").is_some())?,
        };
        match self.classify(value) {
            Body::Call { name, arguments } => Some((name, arguments)),
            Body::Skipped | Body::Raises => None,
        }
    }

    fn content(&self, text: &str) -> Option<String> {
        split_content_from_first_marker(text, self.open).0
    }
}

/// Lenient arguments text: a JSON string stays single-encoded (PR's behaviour) and is counted.
fn lenient_arguments(out: &mut Collector, arguments: PyValue) -> String {
    match arguments {
        PyValue::Str(s) => {
            out.note_single_encoded();
            s
        }
        other => dumps(&other, false, false),
    }
}

impl Parser for TaggedJson {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains(self.open) {
            return Parsed::pass_through(text);
        }
        let payloads = extract_tagged_payloads(text, self.open, self.close);
        match mode {
            Mode::Strict => self.strict(text, &payloads),
            Mode::Lenient => self.lenient(text, &payloads),
        }
    }
}
