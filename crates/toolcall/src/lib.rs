//! Tool-call parsers: a language model's raw completion text → OpenAI-style tool calls.
//!
//! Pure functions for the rollout engine (no I/O, no async). Each parser reimplements one of
//! hermes-agent's `environments/tool_call_parsers` with 1:1 behaviour on valid input and on every
//! quirk the specification (`shared/docs/agent-loop.md` §3) lists; where hermes versions differ this
//! follows MAIN04 (hermes-agent `main` of 2026-04-11), and `auto`, `custom_xml` and `deepseek_v4`
//! follow the later upstream files. Each module documents its choices.
//!
//! # Contract (§3)
//! - No call found: `content == Some(text)` unchanged and no calls (the pass-through invariant), in
//!   both modes.
//! - Calls found: `content` is the text before the first marker, stripped, `None` if empty (the
//!   exceptions the reference has are kept and documented: `llama3_json`/`qwen3_coder` may return
//!   `Some("")`, `auto` removes the markup instead, `deepseek_v4` cuts at the first call).
//!   Text after the calls is dropped.
//! - Ids: `call_` + 8 lowercase hex; `mistral` 9 alphanumerics; `qwen3_coder` `call_` + 24 hex;
//!   `kimi_k2` the model's own id (`functions.get_weather:0`).
//!
//! # Modes
//! [`Mode::Strict`] is the reference exactly, including all-or-nothing failure and hermes'
//! double-encoded string arguments. [`Mode::Lenient`] (the default) returns the same on valid
//! input and additionally keeps the valid calls when another is malformed, repairs a truncated
//! *last* call (JSON-bodied formats: hermes/qwen/longcat, llama, mistral), keeps string arguments
//! single-encoded, and never returns a call with a blank name. [`Diagnostics`] counts each of
//! these.
//!
//! # Python compatibility
//! Arguments are the text Python would print, so the crate carries its own `json.loads`/`dumps`
//! over an insertion-ordered value (`{"x":1,"a":2}` keeps its order; big integers and `NaN` survive)
//! and an `ast.literal_eval` subset.
//!
//! # Known deviations from the reference
//! - A lone UTF-16 surrogate (`"\ud83d"`) is a valid Python `str` but not a Rust `String`; it
//!   becomes U+FFFD.
//! - `ast.literal_eval` results that `json.dumps` cannot serialise (sets, bytes, complex, `...`,
//!   tuple keys) make the reference's whole GLM/Qwen3-Coder parse fail; here the value is kept as
//!   its text.
//! - Nesting deeper than 1000 levels is CPython's `RecursionError`; CPython's real threshold
//!   depends on its stack.
//! - `custom_xml` has no `try` in the reference, so its rare exceptions reach the caller; here the
//!   text passes through.
//! - Rust's `\w` and Python's differ on some non-ASCII characters (XML parameter names).
//! - `python_str`'s escaping of unassigned code points: see [`python_str`].
//! - Worst-case cost: where the reference rescans (unclosed repeated blocks), the parsers use
//!   linear-time equivalents with the same results, so degenerate generations cannot stall a
//!   worker.

mod auto;
mod common;
mod custom_xml;
mod deepseek;
mod glm;
mod hermes;
mod kimi;
mod lenient;
mod literal;
mod llama;
mod mistral;
mod normalize;
mod pyjson;
mod python;
mod qwen3_coder;

pub use normalize::normalize_tool_args;
pub use python::{python_json, python_repr_str_list, python_str};

/// One parsed call. `arguments` is the arguments text as the reference would give it (usually
/// JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// How a parser treats malformed or truncated output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The reference behaviour exactly.
    Strict,
    /// The reference results on valid input, plus partial success, truncation repair,
    /// single-encoded string arguments and no blank names.
    #[default]
    Lenient,
}

/// What one parse saw, beyond the calls it returns.
///
/// In strict mode `found == calls.len()` and the other counters stay zero: malformed input makes
/// the whole strict parse pass through instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostics {
    /// Calls found in total (kept + dropped).
    pub found: usize,
    /// Malformed calls dropped in lenient mode while others were kept (strict: all-or-nothing
    /// instead).
    pub dropped: usize,
    /// Truncated trailing calls repaired (lenient only).
    pub recovered_truncated: usize,
    /// String arguments kept single-encoded where the reference double-encodes (lenient only).
    pub single_encoded: usize,
}

/// The result of one parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// `Some(text)` unchanged when no call was found; otherwise the text before the first call.
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
    pub diagnostics: Diagnostics,
}

impl Parsed {
    /// The pass-through result: the text unchanged, no calls.
    pub(crate) fn pass_through(text: &str) -> Self {
        Parsed {
            content: Some(text.to_owned()),
            calls: Vec::new(),
            diagnostics: Diagnostics::default(),
        }
    }
}

/// A tool-call format.
pub trait Parser: Send + Sync + std::fmt::Debug {
    /// The registry name this instance was looked up by (aliases report their own name).
    fn name(&self) -> &'static str;
    /// Splits `text` into content and calls. Never panics; see the crate docs for the contract.
    fn parse(&self, text: &str, mode: Mode) -> Parsed;
}

/// The crate's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `get_parser(name)` with an unregistered name; the message is the reference's `KeyError`
    /// text.
    #[error(
        "Tool call parser '{name}' not found. Available parsers: {}",
        python_repr_str_list(available)
    )]
    UnknownParser {
        name: String,
        available: Vec<&'static str>,
    },
    /// Text that Python's `json.loads` rejects; the message is the exception's `str()`, e.g.
    /// `Expecting value: line 1 column 1 (char 0)`.
    #[error("{message}")]
    InvalidJson { message: String },
}

/// Every registered name with its parser, aliases included.
static REGISTRY: [(&str, &dyn Parser); 17] = [
    ("auto", &auto::AUTO),
    ("custom_xml", &custom_xml::CUSTOM_XML),
    ("deepseek_dsml", &deepseek::DEEPSEEK_DSML),
    ("deepseek_v3", &deepseek::DEEPSEEK_V3),
    ("deepseek_v31", &deepseek::DEEPSEEK_V31),
    ("deepseek_v3_1", &deepseek::DEEPSEEK_V3_1),
    ("deepseek_v4", &deepseek::DEEPSEEK_V4),
    ("glm45", &glm::GLM45),
    ("glm47", &glm::GLM47),
    ("hermes", &hermes::HERMES),
    ("kimi_k2", &kimi::KIMI_K2),
    ("llama3_json", &llama::LLAMA3_JSON),
    ("llama4_json", &llama::LLAMA4_JSON),
    ("longcat", &hermes::LONGCAT),
    ("mistral", &mistral::MISTRAL),
    ("qwen", &hermes::QWEN),
    ("qwen3_coder", &qwen3_coder::QWEN3_CODER),
];

/// The parser registered as `name` (the reference's `get_parser`).
pub fn parser(name: &str) -> Result<&'static dyn Parser, Error> {
    REGISTRY
        .iter()
        .find(|(registered, _)| *registered == name)
        .map(|(_, parser)| *parser)
        .ok_or_else(|| Error::UnknownParser {
            name: name.to_owned(),
            available: list_parsers(),
        })
}

/// Every registered name, sorted as Python's `sorted()` sorts them (aliases included).
pub fn list_parsers() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = REGISTRY.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    names
}

/// Python's `json.loads(text)` as a `serde_json::Value`, or the exception text Python would give
/// (the MAIN04 loop sends `Invalid JSON in tool arguments: {that}. Please retry with valid JSON.`).
///
/// The value is for dispatch: `serde_json` maps are sorted, integers beyond 64 bits become floats
/// and `NaN`/`Infinity` become `null`. Nesting beyond 1000 levels and integers over 4300 digits
/// fail with Python's `RecursionError`/`ValueError` texts.
pub fn python_json_loads(text: &str) -> Result<serde_json::Value, Error> {
    pyjson::loads(text)
        .map(|value| python::to_serde(&value))
        .map_err(|err| Error::InvalidJson {
            message: err.python_message(text),
        })
}
