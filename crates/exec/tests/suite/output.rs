//! Output: merging, stdin, UTF-8, truncation.

use pretty_assertions::assert_eq;
use slotbox_exec::ExecRequest;
use slotbox_exec::OutputCap;

use super::backends;
use super::fixture;

#[tokio::test]
async fn stdout_and_stderr_are_merged_in_arrival_order() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .run("echo one; echo two >&2; echo three; echo four >&2")
            .await;
        assert_eq!(r.output, "one\ntwo\nthree\nfour\n", "{backend:?}");
    }
}

#[tokio::test]
async fn stdin_is_piped_then_closed_or_dev_null() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .exec(ExecRequest::new("cat; echo done").stdin("piped\ndata"))
            .await;
        assert_eq!(r.output, "piped\ndatadone\n", "{backend:?}");
        // Without stdin, cat sees EOF at once instead of hanging until the timeout.
        let r = f.run("cat; echo no-input").await;
        assert_eq!(
            (r.exit_code, r.output.as_str()),
            (0, "no-input\n"),
            "{backend:?}"
        );
        assert!(!r.timed_out);
    }
}

#[tokio::test]
async fn large_stdin_is_delivered_whole() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let data = "x".repeat(1 << 20);
        let r = f.exec(ExecRequest::new("wc -c").stdin(data)).await;
        assert_eq!(r.output.trim(), "1048576", "{backend:?}");
    }
}

#[tokio::test]
async fn utf8_is_decoded_across_reads_and_invalid_bytes_replaced() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        // Each byte of a 4-byte character written separately, with pauses, so they arrive in
        // separate reads.
        let r = f
            .run("printf '\\xf0'; sleep 0.05; printf '\\x9f'; sleep 0.05; printf '\\x98\\x80 ok \\xff\\xfe end'")
            .await;
        assert_eq!(r.output, "😀 ok \u{FFFD}\u{FFFD} end", "{backend:?}");
    }
}

#[tokio::test]
async fn big_output_is_truncated_head_and_tail_with_notice() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f.run("seq 1 200000").await;
        assert!(r.truncated, "{backend:?}");
        assert!(r.output.chars().count() <= 50_000);
        assert!(r.output.starts_with("1\n2\n3\n"));
        assert!(r.output.ends_with("199999\n200000\n"));
        let total = (1..=200_000)
            .map(|n: u32| n.to_string().len() + 1)
            .sum::<usize>();
        let notice_start = r.output.find("[OUTPUT TRUNCATED - ").unwrap();
        let notice = &r.output[notice_start..];
        let expected_tail = format!(" chars omitted out of {} total]", with_commas(total));
        assert!(notice.contains(&expected_tail), "{notice:.200}");
    }
}

#[tokio::test]
async fn custom_cap_and_exact_output_below_it() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .exec(ExecRequest::new("printf '%s' {1..100}").max_output(OutputCap::chars(100)))
            .await;
        assert!(r.truncated);
        assert!(
            r.output.chars().count() <= 100,
            "{}",
            r.output.chars().count()
        );
        let r = f
            .exec(ExecRequest::new("printf 'short'").max_output(OutputCap::chars(100)))
            .await;
        assert_eq!((r.output.as_str(), r.truncated), ("short", false));
    }
}

fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn stderr_can_be_captured_apart() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .exec(ExecRequest::new("echo out; echo err >&2; echo out2").separate_stderr())
            .await;
        assert_eq!(r.output, "out\nout2\n", "{backend:?}");
        assert_eq!(r.stderr.as_deref(), Some("err\n"), "{backend:?}");
        let r = f
            .exec(
                ExecRequest::new("seq 1 10000 >&2; echo tail")
                    .separate_stderr()
                    .max_output(OutputCap::chars(100)),
            )
            .await;
        assert!(r.truncated);
        assert_eq!(r.output, "tail\n");
        assert!(r.stderr.unwrap().contains("[OUTPUT TRUNCATED"));
        // Merged (the default) has no separate stderr.
        assert_eq!(f.run("echo x >&2").await.stderr, None);
    }
}

#[tokio::test]
async fn output_streams_to_a_channel_as_it_arrives() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        // A one-slot channel: reading pauses while the consumer is behind, and nothing is lost.
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
        let mut request =
            ExecRequest::new("for i in 1 2 3; do echo line$i; sleep 0.05; done; seq 1 20000");
        request.stream = Some(sender);
        let collect = async {
            let mut chunks = Vec::new();
            while let Some(chunk) = receiver.recv().await {
                chunks.push(chunk);
                tokio::task::yield_now().await;
            }
            chunks
        };
        let run = async {
            let result = f.session.exec(&request).await.unwrap();
            drop(request);
            result
        };
        let (result, chunks) = tokio::join!(run, collect);
        let streamed: String = chunks.concat();
        assert!(chunks.len() >= 3, "{backend:?}: {} chunks", chunks.len());
        assert!(
            streamed.starts_with("line1\nline2\nline3\n1\n2\n"),
            "{backend:?}"
        );
        assert!(streamed.ends_with("19999\n20000\n"));
        // The stream is whole even where the result is truncated.
        assert!(result.truncated);
        assert_eq!(
            streamed.len(),
            "line1\nline2\nline3\n".len()
                + (1..=20000)
                    .map(|n: u32| n.to_string().len() + 1)
                    .sum::<usize>()
        );
    }
}
