//! Robustness: every parser gets a few hundred truncated and randomly mutated variants of golden
//! inputs of every format, in both modes. Nothing may panic, and the contract's invariants must
//! hold on every result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use slotbox_toolcall::{Mode, Parsed, list_parsers, parser};

/// Golden inputs of every format; each parser also sees the other formats' inputs.
const GOLDEN: &[&str] = &[
    r#"Let me check. <tool_call>{"name": "a", "arguments": {"x": [1, 2.5, "é"]}}</tool_call><tool_call>{"name": "b", "arguments": "ls -la"}</tool_call> after"#,
    r#"<tool_call>{"name": "terminal", "arguments": {"command": "ls -la"}}"#,
    r#"<longcat_tool_call>{"name": "a", "arguments": {}}</longcat_tool_call>"#,
    r#"pre <|python_tag|>{"name": "a", "arguments": {"q": 1}} {"name": "b", "parameters": {}}"#,
    r#"hi[TOOL_CALLS] [{"name":"a","arguments":{"x":1}}, {"name":"b","arguments":"s"}]"#,
    r#"pre[TOOL_CALLS]get_weather{"city":"NYC"}[TOOL_CALLS]ping{}"#,
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "x <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": 1}<｜tool▁call▁end｜>",
    "<｜DSML｜tool_calls_begin｜><｜DSML｜tool_call_begin｜>f\n```json\n{\"a\": 1}\n```<｜DSML｜tool_call_end｜>< | DSML | tool_call_begin > g {\"b\": 2} < | DSML | tool_call_end >",
    "pre <|tool_calls_section_begin|><|tool_call_begin|>functions.a:0<|tool_call_argument_begin|>{\"x\":1}<|tool_call_end|><|tool_calls_section_end|>",
    "t\n<tool_call>f\n<arg_key>a</arg_key><arg_value>(1, 'x', True)</arg_value>\n<arg_key>b</arg_key>\\n<arg_value>{'k': None}</arg_value></tool_call>",
    "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=b>NULL\n</function>\n</tool_call>",
    "<tool_use><parameter=tool_name>a</parameter><parameter=arguments>{\"x\": 1}</parameter></tool_use>",
    "Run:\n```bash\nls -la\n```\n{\"name\": \"t\", \"arguments\": \"{\\\"c\\\": 1}\"}",
];

/// Fragments that tend to change what a parser sees.
const NOISE: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\n",
    " ",
    "\\",
    "<",
    ">",
    "|",
    "｜",
    "é",
    "\u{1c}",
    "\u{a0}",
    "name",
    "null",
    "True",
    "1e5",
    "</tool_call>",
    "<tool_call>",
    "<parameter=",
    "</parameter>",
    "```",
    "[TOOL_CALLS]",
    "<|tool_call_begin|>",
    "<｜tool▁call▁end｜>",
    "<arg_key>",
    "\\n",
];

/// xorshift64*: deterministic, dependency-free randomness for reproducible failures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

/// A char-boundary offset in `text`.
fn boundary(rng: &mut Rng, text: &str) -> usize {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    bounds[rng.below(bounds.len())]
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let i = boundary(rng, text);
    let j = boundary(rng, text).max(i);
    let noise = NOISE[rng.below(NOISE.len())];
    match rng.below(5) {
        0 => text[..i].to_owned(),
        1 => format!("{}{}", &text[..i], &text[j..]),
        2 => format!("{}{noise}{}", &text[..i], &text[i..]),
        3 => format!("{}{}", &text[..j], &text[i..]),
        _ => format!("{}{noise}{}", &text[..i], &text[j..]),
    }
}

fn variants() -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for golden in GOLDEN {
        out.push((*golden).to_owned());
        // Every truncation point a generation could stop at (sampled on long inputs).
        let bounds: Vec<usize> = golden.char_indices().map(|(i, _)| i).collect();
        for &cut in bounds.iter().step_by((bounds.len() / 40).max(1)) {
            out.push(golden[..cut].to_owned());
        }
        for _ in 0..30 {
            let mut text = (*golden).to_owned();
            for _ in 0..=rng.below(3) {
                text = mutate(&mut rng, &text);
            }
            out.push(text);
        }
    }
    out
}

fn check(name: &str, mode: Mode, text: &str, parsed: &Parsed) {
    let context = format!("{name} {mode:?} {text:?}");
    if parsed.calls.is_empty() {
        assert_eq!(
            parsed.content.as_deref(),
            Some(text),
            "pass-through: {context}"
        );
    }
    let d = &parsed.diagnostics;
    assert_eq!(d.found, parsed.calls.len() + d.dropped, "found: {context}");
    for call in &parsed.calls {
        assert!(!call.id.is_empty(), "id: {context}");
    }
    match mode {
        Mode::Strict => {
            assert_eq!(
                (d.dropped, d.recovered_truncated, d.single_encoded),
                (0, 0, 0),
                "strict counters: {context}"
            );
        }
        Mode::Lenient => {
            for call in &parsed.calls {
                assert!(!call.name.trim().is_empty(), "blank name: {context}");
            }
        }
    }
}

#[test]
fn no_parser_panics_and_the_contract_holds_on_mutated_inputs() {
    let texts = variants();
    assert!(texts.len() > 300, "{}", texts.len());
    for name in list_parsers() {
        let p = parser(name).unwrap();
        for text in &texts {
            for mode in [Mode::Strict, Mode::Lenient] {
                check(name, mode, text, &p.parse(text, mode));
            }
        }
    }
}

#[test]
fn pathological_nesting_and_repetition_neither_panic_nor_stall() {
    let texts = [
        "[".repeat(50_000),
        r#"{"a":"#.repeat(20_000),
        format!("<tool_call>{}", r#"{"a":"#.repeat(20_000)),
        format!("[TOOL_CALLS][{}", r#"{"a":"#.repeat(20_000)),
        format!(
            "<tool_call>f\n<arg_key>a</arg_key><arg_value>{}</arg_value></tool_call>",
            "(".repeat(10_000)
        ),
        format!("<function=f><parameter=a>{}", "[".repeat(10_000)),
        format!(
            "<tool_use>{}",
            "<parameter=tool_name>a</parameter>".repeat(3_000)
        ),
        format!(
            "<|tool_calls_section_begin|>{}",
            "<|tool_call_begin|>f:0<|tool_call_argument_begin|>x".repeat(5_000)
        ),
        // Valid values just inside the nesting limits: decoded, re-serialised and dropped.
        format!(
            r#"<tool_call>{{"name": "a", "arguments": {}{}}}</tool_call>"#,
            "[".repeat(998),
            "]".repeat(998)
        ),
        format!(
            "<tool_call>f\n<arg_key>a</arg_key><arg_value>{}1{}</arg_value></tool_call>",
            "[".repeat(199),
            "]".repeat(199)
        ),
    ];
    let started = std::time::Instant::now();
    for name in list_parsers() {
        let p = parser(name).unwrap();
        for text in &texts {
            for mode in [Mode::Strict, Mode::Lenient] {
                check(name, mode, text, &p.parse(text, mode));
            }
        }
    }
    let deep = parser("hermes").unwrap().parse(&texts[8], Mode::Strict);
    assert_eq!(deep.calls[0].arguments.len(), 2 * 998);
    let deep = parser("glm45").unwrap().parse(&texts[9], Mode::Strict);
    assert_eq!(deep.calls[0].arguments.len(), 2 * 199 + 8);
    // Generous for debug builds on a loaded machine; quadratic behaviour takes minutes here.
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
