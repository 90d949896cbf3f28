//! `custom_xml`: `<tool_use>`/`<tool_call>` wrapping `<parameter=tool_name>N</parameter>
//! <parameter=arguments>{json}</parameter>`, as UP's `custom_xml_parser.py` (7ddcede8).
//!
//! Reference behaviour (strict):
//! - needs `<tool_use>` or `<tool_call>` in the text and at least one `<parameter=tool_name>`;
//!   parameters are `<parameter=(\w+)>(.*?)</parameter>` (DOTALL), name and value stripped;
//! - a call's block runs from its `tool_name` parameter to the first `</tool_use>` after it (only
//!   if there is none, the first `</tool_call>`), else to the end of the text;
//! - arguments: text starting with `{` is `json.loads`ed (`{}` if invalid); other text is tried as
//!   JSON too and becomes `{"value": text}` if that fails. They are `json.dumps`ed, so a JSON
//!   string argument is double-encoded. A block with `<parameter=name>` instead (only reachable
//!   when the `tool_name` parameter lies outside its own block) wraps non-`{` text directly;
//! - calls with the same name and arguments (compared as `json.dumps(sort_keys=True)`) are kept
//!   once;
//! - content is the text before the last `<tool_call>` (else `<tool_use>`) found within the 200
//!   characters before the first `tool_name` parameter, stripped; with no such tag it is `None`.
//!
//! This parser has no `try` in the reference, so an exception (nesting too deep, a 4300+ digit
//! integer) would propagate to the caller; here it passes the text through. Rust's `\w` is
//! Unicode-aware like Python's but differs on a few non-ASCII characters; parameter names are
//! ASCII in every known format.
//!
//! Lenient mode drops (and counts) a call with a blank name or such an error instead, and keeps a
//! string argument single-encoded (counted).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::common::{Collector, NextFind, literal_regex, make_uuid_id, py_strip};
use crate::pyjson::{JsonError, PyValue, loads};
use crate::python::dumps;
use crate::{Mode, Parsed, Parser, ToolCall};

pub(crate) static PARAM: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"(?s)<parameter=(\w+)>(.*?)</parameter>"));

/// How many characters before the first call are searched for its opening tag.
const CONTENT_WINDOW_CHARS: usize = 200;

#[derive(Debug)]
pub(crate) struct CustomXml;

pub(crate) static CUSTOM_XML: CustomXml = CustomXml;

/// One `<parameter=NAME>VALUE</parameter>` match over the whole text.
#[derive(Debug, Clone, Copy)]
struct ParamMatch<'t> {
    start: usize,
    end: usize,
    raw_name: &'t str,
    name: &'t str,
    value: &'t str,
}

/// A parameter's stripped value with the index of its match: equal indices mean equal text, which
/// lets callers decode a value once however many blocks share it.
pub(crate) type ParamValue<'t> = (usize, &'t str);

/// The parameters the reference reads from one call block (the last value of each name).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BlockParams<'t> {
    pub(crate) tool_name: Option<ParamValue<'t>>,
    pub(crate) arguments: Option<ParamValue<'t>>,
    pub(crate) name: Option<ParamValue<'t>>,
}

/// Every call block of a text, one per `<parameter=tool_name>` match, in order.
#[derive(Debug)]
pub(crate) struct CallBlocks<'t> {
    /// Byte offset of the first `<parameter=tool_name>`.
    pub(crate) first_start: usize,
    pub(crate) blocks: Vec<BlockParams<'t>>,
}

/// The reference's blocks: each runs from its `tool_name` match to the first `</tool_use>` after it
/// (only without one, the first `</tool_call>`), else to the end, and its parameters are
/// `PARAM.finditer(block)` with later values winning.
///
/// The reference re-scans every block, which is quadratic when blocks overlap (unclosed, repeated
/// calls, as degenerate generations produce). A block's matches are exactly the whole-text matches
/// from its `tool_name` match on that end before the block does (the first one crossing the block
/// end has no `</parameter>` inside the block, so nothing after it fits either), so one scan and
/// per-name "last index so far" tables give each block's values in constant time.
pub(crate) fn call_blocks(text: &str) -> Option<CallBlocks<'_>> {
    let params: Vec<ParamMatch<'_>> = PARAM
        .captures_iter(text)
        .filter_map(|caps| {
            let whole = caps.get(0)?;
            let raw_name = caps.get(1)?.as_str();
            Some(ParamMatch {
                start: whole.start(),
                end: whole.end(),
                raw_name,
                name: py_strip(raw_name),
                value: py_strip(caps.get(2).map_or("", |m| m.as_str())),
            })
        })
        .collect();
    let last_index = |key: &str| -> Vec<Option<usize>> {
        let mut last = None;
        params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.name == key {
                    last = Some(i);
                }
                last
            })
            .collect()
    };
    let (last_tool_name, last_arguments, last_name) = (
        last_index("tool_name"),
        last_index("arguments"),
        last_index("name"),
    );
    let mut tool_use_ends = NextFind::new("</tool_use>");
    let mut tool_call_ends = NextFind::new("</tool_call>");
    let mut first_start = None;
    let mut blocks = Vec::new();
    for (i, param) in params.iter().enumerate() {
        if param.raw_name != "tool_name" {
            continue;
        }
        first_start.get_or_insert(param.start);
        let end = tool_use_ends
            .at(text, param.start)
            .map(|at| at + "</tool_use>".len())
            .or_else(|| {
                tool_call_ends
                    .at(text, param.start)
                    .map(|at| at + "</tool_call>".len())
            })
            .unwrap_or(text.len());
        // Match ends increase, so the block's matches are a prefix of `params[i..]`.
        let inside = params
            .get(i..)
            .map_or(0, |rest| rest.partition_point(|p| p.end <= end));
        let pick = |last: &[Option<usize>]| -> Option<ParamValue<'_>> {
            let k = (*last.get((i + inside).checked_sub(1)?)?)?;
            (k >= i).then_some((k, params.get(k)?.value))
        };
        blocks.push(BlockParams {
            tool_name: pick(&last_tool_name),
            arguments: pick(&last_arguments),
            name: pick(&last_name),
        });
    }
    Some(CallBlocks {
        first_start: first_start?,
        blocks,
    })
}

/// Canonical small ids for texts, so calls can be de-duplicated without re-hashing long texts.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: HashMap<String, usize>,
}

impl Interner {
    pub(crate) fn id(&mut self, text: String) -> usize {
        let next = self.ids.len();
        *self.ids.entry(text).or_insert(next)
    }
}

fn value_dict(text: &str) -> PyValue {
    PyValue::Dict(vec![("value".to_owned(), PyValue::Str(text.to_owned()))])
}

/// Which `_parse_block` branch read the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Branch {
    /// `<parameter=tool_name>`: non-`{` text is tried as JSON before `{"value": …}`.
    ToolName,
    /// `<parameter=name>`: non-`{` text is wrapped directly.
    Name,
}

/// `_parse_block`'s arguments for one branch.
fn block_arguments(branch: Branch, args: &str) -> Result<PyValue, JsonError> {
    match loads(args) {
        Ok(value) if branch == Branch::ToolName || args.starts_with('{') => Ok(value),
        Ok(_) => Ok(value_dict(args)),
        Err(JsonError::Decode { .. }) if args.starts_with('{') => Ok(PyValue::Dict(Vec::new())),
        Err(JsonError::Decode { .. }) => Ok(value_dict(args)),
        Err(other) if branch == Branch::ToolName || args.starts_with('{') => Err(other),
        Err(_) => Ok(value_dict(args)),
    }
}

/// One decoded arguments value: its de-duplication id, its arguments text, and whether that text
/// is a string kept single-encoded.
#[derive(Debug)]
struct Decoded {
    dedup: usize,
    text: String,
    single_encoded: bool,
}

/// The content rule described in the module docs.
fn content(text: &str, first_start: usize) -> Option<String> {
    let window_start = text
        .get(..first_start)
        .unwrap_or_default()
        .char_indices()
        .rev()
        .nth(CONTENT_WINDOW_CHARS - 1)
        .map_or(0, |(i, _)| i);
    let window = text.get(window_start..first_start).unwrap_or_default();
    let tag_at = ["<tool_call>", "<tool_use>"]
        .iter()
        .find_map(|tag| window.rfind(tag))?;
    let prefix = py_strip(text.get(..window_start + tag_at).unwrap_or_default());
    (!prefix.is_empty()).then(|| prefix.to_owned())
}

impl Parser for CustomXml {
    fn name(&self) -> &'static str {
        "custom_xml"
    }

    fn parse(&self, text: &str, mode: Mode) -> Parsed {
        if !text.contains("<tool_use>") && !text.contains("<tool_call>") {
            return Parsed::pass_through(text);
        }
        let Some(call_blocks) = call_blocks(text) else {
            return Parsed::pass_through(text);
        };
        let mut out = Collector::new(mode);
        // Decoded once per distinct arguments match (blocks may share one), keyed by branch.
        let mut decoded: HashMap<(Branch, Option<usize>), Result<Decoded, JsonError>> =
            HashMap::new();
        let mut interner = Interner::default();
        let mut name_ids: HashMap<usize, usize> = HashMap::new();
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        for block in &call_blocks.blocks {
            let (branch, (name_index, name)) = match (block.tool_name, block.name) {
                (Some(tool_name), _) => (Branch::ToolName, tool_name),
                (None, Some(name)) => (Branch::Name, name),
                (None, None) => continue,
            };
            let args_index = block.arguments.map(|(index, _)| index);
            let args = block.arguments.map_or("{}", |(_, text)| text);
            let lenient = out.lenient();
            let entry = decoded.entry((branch, args_index)).or_insert_with(|| {
                block_arguments(branch, args).map(|value| {
                    let dedup = interner.id(dumps(&value, true, true));
                    match value {
                        PyValue::Str(s) if lenient => Decoded {
                            dedup,
                            text: s,
                            single_encoded: true,
                        },
                        other => Decoded {
                            dedup,
                            text: dumps(&other, false, false),
                            single_encoded: false,
                        },
                    }
                })
            });
            let arguments = match entry {
                Ok(arguments) => &*arguments,
                Err(_) if out.lenient() => {
                    out.drop_malformed();
                    continue;
                }
                Err(_) => return Parsed::pass_through(text),
            };
            let name_id = *name_ids
                .entry(name_index)
                .or_insert_with(|| interner.id(name.to_owned()));
            if !seen.insert((name_id, arguments.dedup)) {
                continue;
            }
            if arguments.single_encoded {
                out.note_single_encoded();
            }
            out.accept(ToolCall {
                id: make_uuid_id(),
                name: name.to_owned(),
                arguments: arguments.text.clone(),
            });
        }
        out.finish(text, || content(text, call_blocks.first_start))
    }
}
