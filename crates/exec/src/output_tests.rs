//! Unit tests for the decoder and the bounded collector.

use super::*;
use pretty_assertions::assert_eq;

fn capture_of(cap: usize, chunks: &[&str]) -> BoundedCapture {
    let mut capture = BoundedCapture::new(OutputCap::chars(cap));
    for chunk in chunks {
        capture.push(chunk);
    }
    capture
}

#[test]
fn small_output_is_exact() {
    let rendered = capture_of(100, &["abc", "def\n"]).render("");
    assert_eq!(
        rendered,
        RenderedOutput {
            text: "abcdef\n".to_owned(),
            truncated: false
        }
    );
}

#[test]
fn output_exactly_at_cap_is_not_truncated() {
    let text = "x".repeat(100);
    let rendered = capture_of(100, &[&text]).render("");
    assert_eq!(rendered.text, text);
    assert!(!rendered.truncated);
}

#[test]
fn long_output_keeps_head_and_tail_within_cap() {
    let text: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    // Push in uneven chunks to exercise the sliding tail.
    let chunks: Vec<&str> = vec![&text[..1], &text[1..777], &text[777..5000], &text[5000..]];
    let capture = capture_of(1000, &chunks);
    assert_eq!(capture.total_chars(), 10_000);
    let rendered = capture.render("");
    assert!(rendered.truncated);
    assert!(rendered.text.chars().count() <= 1000);
    let notice_start = rendered.text.find("\n\n... [OUTPUT TRUNCATED - ").unwrap();
    let head = &rendered.text[..notice_start];
    let notice_end = rendered.text.find("] ...\n\n").unwrap() + "] ...\n\n".len();
    let tail = &rendered.text[notice_end..];
    assert!(text.starts_with(head));
    assert!(text.ends_with(tail));
    let omitted = 10_000 - head.len() - tail.len();
    let notice = &rendered.text[notice_start..notice_end];
    assert_eq!(
        notice,
        format!(
            "\n\n... [OUTPUT TRUNCATED - {} chars omitted out of 10,000 total] ...\n\n",
            thousands(omitted)
        )
    );
    // 40/60 split of what is kept (within one character of rounding).
    let kept = head.len() + tail.len();
    assert_eq!(head.len(), kept * 2 / 5);
    // And the result fills the cap: nothing kept that the cap allowed is wasted.
    assert_eq!(rendered.text.chars().count(), 1000);
}

#[test]
fn memory_stays_bounded_by_the_cap() {
    let mut capture = BoundedCapture::new(OutputCap::chars(1000));
    let chunk = "y".repeat(4096);
    for _ in 0..1000 {
        capture.push(&chunk);
    }
    assert!(capture.head.chars().count() + capture.tail.chars().count() <= 1000);
    assert_eq!(capture.total_chars(), 4096 * 1000);
}

#[test]
fn suffix_is_always_kept_within_the_cap() {
    let text = "z".repeat(5000);
    let suffix = "\n[Command timed out after 1s]";
    let rendered = capture_of(500, &[&text]).render(suffix);
    assert!(rendered.text.ends_with(suffix));
    assert!(rendered.text.chars().count() <= 500);
    assert!(rendered.truncated);
}

#[test]
fn suffix_that_would_overflow_exact_output_truncates_it() {
    let text = "q".repeat(100);
    let rendered = capture_of(100, &[&text]).render("\n[Command interrupted]");
    assert!(rendered.truncated);
    assert!(rendered.text.ends_with("\n[Command interrupted]"));
}

#[test]
fn multibyte_characters_count_as_one_and_are_never_split() {
    let text = "é😀".repeat(2000);
    let rendered = capture_of(301, &[&text]).render("");
    assert!(rendered.truncated);
    assert!(rendered.text.chars().count() <= 301);
    assert!(!rendered.text.contains('\u{FFFD}'));
}

#[test]
fn thousands_separators_match_python() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn decoder_joins_characters_split_across_reads() {
    let bytes = "aé😀b".as_bytes();
    let mut decoder = StreamDecoder::new();
    let mut out = String::new();
    for byte in bytes {
        out.push_str(&decoder.decode(std::slice::from_ref(byte), false));
    }
    out.push_str(&decoder.decode(&[], true));
    assert_eq!(out, "aé😀b");
}

#[test]
fn decoder_replaces_invalid_bytes_and_truncated_tails() {
    let mut decoder = StreamDecoder::new();
    let mut out = decoder.decode(b"ok\xff\xfeok\xe2\x82", false);
    out.push_str(&decoder.decode(&[], true));
    assert_eq!(out, "ok\u{FFFD}\u{FFFD}ok\u{FFFD}");
}
