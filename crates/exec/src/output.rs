//! Output capture: incremental UTF-8 decoding and a bounded head/tail collector.
//!
//! Commands can print gigabytes; an agent can only use a few thousand characters. The collector keeps
//! at most `cap` characters in memory however much arrives: the first 40 % of the cap (head) and a
//! sliding window of the last 60 % (tail), and counts everything it drops. Rendering inserts the
//! hermes-compatible notice `... [OUTPUT TRUNCATED - N chars omitted out of M total] ...` and keeps
//! a required suffix (the timeout or interrupt notice) within the cap.
//!
//! Characters are Unicode scalar values (what Python's `len(str)` counts, which is what hermes' cap
//! measures), not bytes.

use encoding_rs::Decoder;
use encoding_rs::UTF_8;

/// The cap on characters of output kept for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCap(usize);

impl OutputCap {
    /// A cap of `chars` characters. Zero is allowed and keeps only notices.
    pub fn chars(chars: usize) -> Self {
        Self(chars)
    }

    /// The number of characters.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for OutputCap {
    fn default() -> Self {
        Self(slotbox_protocol::DEFAULT_MAX_OUTPUT_CHARS)
    }
}

/// Decodes a byte stream as UTF-8 chunk by chunk: a multi-byte character split across two reads is
/// joined, and invalid bytes become U+FFFD.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    decoder: Decoder,
}

impl StreamDecoder {
    pub(crate) fn new() -> Self {
        Self {
            // Without BOM handling: a leading EF BB BF is output the command printed, keep it.
            decoder: UTF_8.new_decoder_without_bom_handling(),
        }
    }

    /// Decodes `bytes`; with `last`, flushes an incomplete trailing sequence as U+FFFD.
    pub(crate) fn decode(&mut self, bytes: &[u8], last: bool) -> String {
        let capacity = self
            .decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len().saturating_mul(3).saturating_add(4));
        let mut out = String::with_capacity(capacity);
        // The capacity above is the decoder's own worst case, so one call always consumes all input.
        let (_result, _read, _had_errors) = self.decoder.decode_to_string(bytes, &mut out, last);
        out
    }
}

/// Keeps the head and a sliding tail of a character stream, never more than the cap in memory.
#[derive(Debug)]
pub(crate) struct BoundedCapture {
    cap: usize,
    head_cap: usize,
    tail_cap: usize,
    head: String,
    head_chars: usize,
    tail: String,
    tail_chars: usize,
    total_chars: usize,
}

/// What a capture renders to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderedOutput {
    pub(crate) text: String,
    pub(crate) truncated: bool,
}

impl BoundedCapture {
    pub(crate) fn new(cap: OutputCap) -> Self {
        let cap = cap.get();
        // 40 % head / 60 % tail: the end of a log (errors, the final result) matters most.
        let head_cap = (cap as u128 * 2 / 5) as usize;
        Self {
            cap,
            head_cap,
            tail_cap: cap - head_cap,
            head: String::new(),
            head_chars: 0,
            tail: String::new(),
            tail_chars: 0,
            total_chars: 0,
        }
    }

    /// Whether nothing at all was captured.
    pub(crate) fn is_empty(&self) -> bool {
        self.total_chars == 0
    }

    /// Characters seen so far, kept or not.
    #[cfg(test)]
    pub(crate) fn total_chars(&self) -> usize {
        self.total_chars
    }

    /// Appends decoded text.
    pub(crate) fn push(&mut self, mut text: &str) {
        let mut n_chars = text.chars().count();
        self.total_chars += n_chars;
        if self.head_chars < self.head_cap {
            let room = self.head_cap - self.head_chars;
            if n_chars <= room {
                self.head.push_str(text);
                self.head_chars += n_chars;
                return;
            }
            let split = byte_offset_of_char(text, room);
            self.head.push_str(&text[..split]);
            self.head_chars += room;
            text = &text[split..];
            n_chars -= room;
        }
        if n_chars >= self.tail_cap {
            // The new text alone fills the tail window: keep only its end.
            let skip = n_chars - self.tail_cap;
            self.tail.clear();
            self.tail.push_str(&text[byte_offset_of_char(text, skip)..]);
            self.tail_chars = self.tail_cap;
            return;
        }
        self.tail.push_str(text);
        self.tail_chars += n_chars;
        if self.tail_chars > self.tail_cap {
            let excess = self.tail_chars - self.tail_cap;
            let cut = byte_offset_of_char(&self.tail, excess);
            self.tail.drain(..cut);
            self.tail_chars = self.tail_cap;
        }
    }

    /// Renders the kept text, the truncation notice when anything was dropped, and `suffix`, in at
    /// most `cap` characters (unless the cap is smaller than the notice and suffix themselves).
    pub(crate) fn render(&self, suffix: &str) -> RenderedOutput {
        let suffix_chars = suffix.chars().count();
        let kept = self.head_chars + self.tail_chars;
        if kept == self.total_chars && kept + suffix_chars <= self.cap {
            let mut text = String::with_capacity(self.head.len() + self.tail.len() + suffix.len());
            text.push_str(&self.head);
            text.push_str(&self.tail);
            text.push_str(suffix);
            return RenderedOutput {
                text,
                truncated: false,
            };
        }
        // Something must go. The notice's own length depends on the numbers it prints, so iterate
        // to a fixed point (it converges in a step or two: the digit count changes rarely).
        let mut budget = self.cap.saturating_sub(suffix_chars);
        let mut notice = String::new();
        for _ in 0..8 {
            let head_keep = (budget * 2 / 5).min(self.head_chars);
            let tail_keep = (budget - head_keep).min(self.tail_chars);
            let omitted = self.total_chars - head_keep - tail_keep;
            notice = truncation_notice(omitted, self.total_chars);
            let next_budget = self
                .cap
                .saturating_sub(suffix_chars)
                .saturating_sub(notice.chars().count());
            if next_budget == budget {
                break;
            }
            budget = next_budget;
        }
        let head_keep = (budget * 2 / 5).min(self.head_chars);
        let tail_keep = (budget - head_keep).min(self.tail_chars);
        let head = &self.head[..byte_offset_of_char(&self.head, head_keep)];
        let tail = &self.tail[byte_offset_of_char(&self.tail, self.tail_chars - tail_keep)..];
        let mut text = String::with_capacity(head.len() + notice.len() + tail.len() + suffix.len());
        text.push_str(head);
        text.push_str(&notice);
        text.push_str(tail);
        text.push_str(suffix);
        RenderedOutput {
            text,
            truncated: true,
        }
    }
}

/// hermes' notice, byte for byte: `\n\n... [OUTPUT TRUNCATED - 1,234 chars omitted out of 5,678 total] ...\n\n`.
fn truncation_notice(omitted: usize, total: usize) -> String {
    format!(
        "\n\n... [OUTPUT TRUNCATED - {} chars omitted out of {} total] ...\n\n",
        thousands(omitted),
        thousands(total)
    )
}

/// Formats `n` with comma thousands separators, as Python's `{:,}`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The byte offset of the `n`th character of `s` (or `s.len()` past the end).
fn byte_offset_of_char(s: &str, n: usize) -> usize {
    s.char_indices()
        .nth(n)
        .map_or(s.len(), |(offset, _)| offset)
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
