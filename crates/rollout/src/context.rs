//! Context handling: the prompt view sent each turn never exceeds the context budget.
//!
//! The trajectory itself is never cut; each turn the loop asks for a *view* of it. When the whole
//! conversation fits, the view is the conversation. Otherwise (hermes PR `_truncate_context`,
//! made safe): phase 1 shortens long tool results in the middle to head + marker + tail; phase 2
//! drops the oldest middle exchanges whole (an assistant message with its tool answers, so no
//! answer is ever sent without its call). The head (system messages and the first user message)
//! and the last exchanges are kept. Phase 3 (ours: the reference sent such prompts over budget)
//! shortens the kept tail's tool results, largest first, just enough to fit, keeping 40 % of
//! each from its start and 60 % from its end (as hermes' terminal caps output) and saying how
//! much was left out, so one large command output does not end the rollout. If even that does
//! not fit, the turn is not sent: the trajectory ends with `context` rather than a prompt the
//! server would refuse or silently cut.
//!
//! Tokens are estimated without a tokenizer (the engine serves any model): bytes / 4 per text
//! field + 10 per message + 50 per tool call, plus the tool schemas when they are sent (the
//! reference ignored them). An estimate, not a count: close for English and code (about 4 bytes
//! per token), low for text whose tokenizer spends a token or more per 3-byte character (CJK);
//! leave headroom below the model's window for such text.

use crate::message::Message;
use crate::message::Role;

/// Tool results longer than this (bytes) are shortened in phase 1.
const LONG_TOOL_RESULT: usize = 200;
/// Kept from the start of a shortened tool result (characters).
const KEEP_HEAD: usize = 100;
/// Kept from the end of a shortened tool result (characters).
const KEEP_TAIL: usize = 50;
/// Messages protected at the end (rounded out to whole exchanges).
const PROTECT_TAIL: usize = 6;
/// The marker left in a shortened tool result.
pub const CUT_MARKER: &str = "\n...[truncated]...\n";

/// Estimated tokens of one message.
pub fn estimate_message(message: &Message) -> u64 {
    let mut bytes =
        message.content.len() + message.reasoning_content.as_ref().map_or(0, String::len);
    for call in &message.tool_calls {
        bytes += call.function.arguments.len() + call.function.name.len();
    }
    (bytes / 4) as u64 + 10 + 50 * message.tool_calls.len() as u64
}

/// Estimated tokens of a prompt: its messages plus `fixed` (the tool schemas' estimate).
pub fn estimate(messages: &[Message], fixed: u64) -> u64 {
    fixed + messages.iter().map(estimate_message).sum::<u64>()
}

/// Estimated tokens of text sent once per request (the tool schemas).
pub fn estimate_text(text: &str) -> u64 {
    (text.len() / 4) as u64
}

/// What to send this turn.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// The whole conversation fits.
    Whole,
    /// A shortened copy fits.
    Cut(Vec<Message>),
    /// Nothing that keeps the head and the last exchange fits; the estimate of the smallest view.
    TooLarge(u64),
}

/// Picks the view of `messages` that fits `budget` tokens (with `fixed` tokens for the schemas).
pub fn fit(messages: &[Message], fixed: u64, budget: u64) -> View {
    if estimate(messages, fixed) <= budget {
        return View::Whole;
    }
    let head = head_len(messages);
    let tail_start = tail_start(messages, head);
    let mut view: Vec<Message> = messages.to_vec();
    // Phase 1: shorten the middle's long tool results.
    for message in &mut view[head..tail_start] {
        if message.role == Role::Tool && message.content.len() > LONG_TOOL_RESULT {
            message.content = shorten(&message.content);
        }
    }
    if estimate(&view, fixed) <= budget {
        return View::Cut(view);
    }
    // Phase 2: drop the oldest middle exchanges whole.
    let mut total = estimate(&view, fixed);
    let mut cut = head;
    while total > budget && cut < tail_start {
        let end = exchange_end(&view, cut, tail_start);
        total -= view[cut..end].iter().map(estimate_message).sum::<u64>();
        cut = end;
    }
    view.drain(head..cut);
    if total > budget {
        total = shorten_tail(&mut view, fixed, budget);
    }
    if total <= budget {
        View::Cut(view)
    } else {
        View::TooLarge(total)
    }
}

/// Phase 3: shortens tool results (after phase 2 only the tail's are long), largest first, each
/// by just what is still over `budget`, down to `KEEP_HEAD + KEEP_TAIL` bytes. Returns the
/// new estimate.
fn shorten_tail(view: &mut [Message], fixed: u64, budget: u64) -> u64 {
    let mut total = estimate(view, fixed);
    let mut order: Vec<usize> = (0..view.len())
        .filter(|&index| {
            view[index].role == Role::Tool && view[index].content.len() > LONG_TOOL_RESULT
        })
        .collect();
    order.sort_by_key(|&index| std::cmp::Reverse(view[index].content.len()));
    for index in order {
        if total <= budget {
            break;
        }
        let before = estimate_message(&view[index]);
        // Bytes to remove, with room for the marker and the estimate's rounding.
        let excess = usize::try_from(total - budget).unwrap_or(usize::MAX);
        let remove = excess.saturating_mul(4).saturating_add(TAIL_MARKER_ROOM);
        let keep = view[index]
            .content
            .len()
            .saturating_sub(remove)
            .max(KEEP_HEAD + KEEP_TAIL);
        view[index].content = shorten_to(&view[index].content, keep);
        total = total - before + estimate_message(&view[index]);
    }
    total
}

/// Bytes reserved for phase 3's marker when working out how much to keep.
const TAIL_MARKER_ROOM: usize = 96;

/// Keeps about `keep` bytes of `content`: 40 % from its start, 60 % from its end (on character
/// boundaries), with a marker saying how many bytes were left out.
fn shorten_to(content: &str, keep: usize) -> String {
    if content.len() <= keep {
        return content.to_owned();
    }
    let mut head_end = keep * 2 / 5;
    while !content.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = content.len() - (keep - keep * 2 / 5);
    while !content.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let omitted = tail_start - head_end;
    format!(
        "{}\n...[truncated: {omitted} bytes left out to fit the context budget]...\n{}",
        &content[..head_end],
        &content[tail_start..]
    )
}

/// The leading system messages and the first user message.
fn head_len(messages: &[Message]) -> usize {
    messages
        .iter()
        .position(|message| message.role == Role::User)
        .map_or(0, |user| user + 1)
}

/// Where the protected tail starts: about the last `PROTECT_TAIL` messages, never beginning
/// with tool answers whose call could be dropped. It moves forward to the next exchange (so an
/// older, possibly huge exchange is not pulled into the protected part), or, when only tool
/// answers follow, back to the assistant message that asked for them.
fn tail_start(messages: &[Message], head: usize) -> usize {
    let len = messages.len();
    let mut start = len.saturating_sub(PROTECT_TAIL).max(head);
    let mut forward = start;
    while forward < len && messages[forward].role == Role::Tool {
        forward += 1;
    }
    if forward < len {
        return forward;
    }
    while start > head && messages[start].role == Role::Tool {
        start -= 1;
    }
    start
}

/// The end (exclusive) of the exchange starting at `start`: an assistant message and the tool
/// answers following it, or a single message.
fn exchange_end(messages: &[Message], start: usize, limit: usize) -> usize {
    let mut end = start + 1;
    if messages[start].role == Role::Assistant {
        while end < limit && messages[end].role == Role::Tool {
            end += 1;
        }
    }
    end
}

fn shorten(content: &str) -> String {
    let chars: Vec<char> = content.chars().collect();
    if chars.len() <= KEEP_HEAD + KEEP_TAIL {
        return content.to_owned();
    }
    let head: String = chars[..KEEP_HEAD].iter().collect();
    let tail: String = chars[chars.len() - KEEP_TAIL..].iter().collect();
    format!("{head}{CUT_MARKER}{tail}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::message::ToolCall;

    /// system, user, then `pairs` assistant/tool exchanges with 1000-byte tool results (the
    /// reference's golden conversation).
    fn conversation(pairs: usize) -> Vec<Message> {
        let mut messages = vec![Message::system("sys"), Message::user("task")];
        for index in 0..pairs {
            let id = format!("c{index}");
            messages.push(Message::assistant(
                "",
                None,
                vec![ToolCall::function(&id, "terminal", "{}")],
            ));
            messages.push(Message::tool(&id, "x".repeat(1000)));
        }
        messages
    }

    fn assert_well_formed(view: &[Message]) {
        let mut open: Vec<String> = Vec::new();
        for message in view {
            match message.role {
                Role::Tool => {
                    let id = message.tool_call_id.clone().unwrap();
                    assert!(open.contains(&id), "tool answer {id} without its call");
                    open.retain(|open_id| open_id != &id);
                }
                _ => {
                    assert!(open.is_empty(), "calls {open:?} unanswered");
                    open = message.tool_calls.iter().map(|c| c.id.clone()).collect();
                }
            }
        }
    }

    #[test]
    fn a_conversation_within_budget_is_sent_whole() {
        let messages = conversation(6);
        assert_eq!(fit(&messages, 0, estimate(&messages, 0)), View::Whole);
    }

    #[test]
    fn phase_one_shortens_middle_tool_results_only() {
        let messages = conversation(6);
        let View::Cut(view) = fit(&messages, 0, 1400) else {
            panic!("expected a cut")
        };
        let lengths: Vec<usize> = view
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(|m| m.content.chars().count())
            .collect();
        // The reference's golden row: the first three shortened to 169 chars, the tail kept.
        assert_eq!(lengths, vec![169, 169, 169, 1000, 1000, 1000]);
        assert!(view[3].content.contains(CUT_MARKER));
        // The trajectory itself is untouched.
        assert_eq!(messages[3].content.len(), 1000);
    }

    #[test]
    fn phase_two_drops_whole_exchanges_and_keeps_head_and_tail() {
        let messages = conversation(6);
        let View::Cut(view) = fit(&messages, 0, 1000) else {
            panic!("expected a cut")
        };
        assert_eq!(view.len(), 8, "system, user and the last three exchanges");
        assert_eq!(view[0].role, Role::System);
        assert_eq!(view[1].role, Role::User);
        assert_eq!(view[2].tool_calls[0].id, "c3");
        assert_well_formed(&view);
        assert!(estimate(&view, 0) <= 1000);
    }

    #[test]
    fn the_schemas_count_and_too_small_a_budget_sends_nothing() {
        let messages = conversation(6);
        let fits_alone = estimate(&messages, 0);
        assert_ne!(fit(&messages, 100, fits_alone), View::Whole);
        assert!(matches!(fit(&messages, 0, 150), View::TooLarge(_)));
    }

    #[test]
    fn the_tail_never_starts_with_orphaned_tool_answers() {
        // One assistant with four calls: the last six messages start inside its answers.
        let mut messages = vec![Message::system("s"), Message::user("u")];
        messages.push(Message::assistant(
            "",
            None,
            vec![ToolCall::function("a0", "t", "{}")],
        ));
        messages.push(Message::tool("a0", "y".repeat(2000)));
        let calls = (0..4)
            .map(|i| ToolCall::function(format!("b{i}"), "t", "{}"))
            .collect();
        messages.push(Message::assistant("", None, calls));
        for i in 0..4 {
            messages.push(Message::tool(format!("b{i}"), "z".repeat(300)));
        }
        let without_old: Vec<Message> = messages[..2]
            .iter()
            .chain(&messages[4..])
            .cloned()
            .collect();
        let needed = estimate(&without_old, 0);
        // Enough for everything but the old, large exchange: it is dropped, nothing else.
        let View::Cut(view) = fit(&messages, 0, needed) else {
            panic!("expected a cut")
        };
        assert_well_formed(&view);
        assert_eq!(view, without_old);
        let mut cuts = 0;
        for budget in (100..=needed + 100).step_by(25) {
            if let View::Cut(view) = fit(&messages, 0, budget) {
                assert_well_formed(&view);
                assert!(estimate(&view, 0) <= budget);
                cuts += 1;
            }
        }
        assert!(cuts > 0);
    }

    #[test]
    fn phase_three_shortens_a_large_last_result_just_enough() {
        // One command whose output alone is over the budget, after a small exchange.
        let mut messages = conversation(1);
        messages[3].content = "a".repeat(200);
        messages.push(Message::assistant(
            "",
            None,
            vec![ToolCall::function("big", "terminal", "{}")],
        ));
        let output = format!("{}{}", "h".repeat(20_000), "t".repeat(20_000));
        messages.push(Message::tool("big", output));
        for budget in [600, 2000, 8000] {
            let View::Cut(view) = fit(&messages, 0, budget) else {
                panic!("budget {budget}: expected a cut")
            };
            assert_well_formed(&view);
            let estimate = estimate(&view, 0);
            assert!(estimate <= budget, "{estimate} > {budget}");
            // Just enough: within the marker's room of the budget, not cut to a stub.
            assert!(estimate + 40 >= budget, "{estimate} for {budget}");
            let last = &view.last().unwrap().content;
            assert!(last.starts_with('h') && last.ends_with('t'), "{last}");
            assert!(last.contains("bytes left out to fit the context budget"));
        }
        // The trajectory is untouched, and a budget below the head and calls still refuses.
        assert_eq!(messages.last().unwrap().content.len(), 40_000);
        assert!(matches!(fit(&messages, 0, 100), View::TooLarge(_)));
    }

    #[test]
    fn phase_three_cuts_multibyte_text_on_character_boundaries() {
        let text = "é".repeat(5000);
        for keep in [150, 151, 152, 1000, 1001] {
            let short = shorten_to(&text, keep);
            assert!(short.len() < text.len());
            assert!(short.starts_with('é') && short.ends_with('é'));
        }
    }

    #[test]
    fn a_last_turn_of_many_calls_keeps_its_assistant_message() {
        // Seven answers to one assistant message: the tail goes back to it.
        let mut messages = vec![Message::system("s"), Message::user("u")];
        messages.push(Message::assistant(
            "",
            None,
            vec![ToolCall::function("x", "t", "{}")],
        ));
        messages.push(Message::tool("x", "w".repeat(3000)));
        let calls = (0..7)
            .map(|i| ToolCall::function(format!("b{i}"), "t", "{}"))
            .collect();
        messages.push(Message::assistant("", None, calls));
        for i in 0..7 {
            messages.push(Message::tool(format!("b{i}"), "z"));
        }
        let View::Cut(view) = fit(&messages, 0, 500) else {
            panic!("expected a cut")
        };
        assert_well_formed(&view);
        assert_eq!(view.len(), 2 + 8);
    }
}
