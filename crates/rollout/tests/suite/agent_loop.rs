//! The agent loop end to end: the fake model server scripts the model's side and checks every
//! request it receives; real bubblewrap slots run the tools.

use std::time::Duration;

use super::*;
use pretty_assertions::assert_eq;
use slotbox_fake_openai::FakeConfig;
use slotbox_fake_openai::Reply;
use slotbox_fake_openai::Script;
use slotbox_rollout::agent::CallFormat;
use slotbox_rollout::agent::Termination;
use slotbox_rollout::message::Role;

fn native() -> CallFormat {
    CallFormat::Native
}

fn hermes() -> CallFormat {
    CallFormat::Text(slotbox_toolcall::parser("hermes").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_calls_run_in_one_session_and_the_verifier_scores_the_slot() {
    let Some(slots) = slots(1).await else { return };
    let script = Script::new().on(
        "make g.txt",
        vec![
            Reply::terminal(
                "c1",
                "mkdir -p sub && cd sub && echo hello > f.txt && export X=7",
            ),
            Reply::calls(&[
                (
                    "c2",
                    "terminal",
                    "{\"command\": \"pwd; echo $X; cat f.txt\"}",
                ),
                ("c3", "read_file", "{\"path\": \"sub/f.txt\"}"),
                (
                    "c4",
                    "write_file",
                    "{\"path\": \"/workspace/g.txt\", \"content\": \"hi\"}",
                ),
            ])
            .with_reasoning("three at once"),
            Reply::text("<think>all done</think>finished"),
        ],
    );
    let (fake, overruns) = fake(script, FakeConfig::default()).await;
    let mut task = task("t1", "make g.txt");
    task.verify = Some("test \"$(cat /workspace/g.txt)\" = hi".to_owned());
    let trajectory = rollout(&slots, &model(&fake), &task, &settings(native())).await;

    assert_eq!(fake.violations(), Vec::<String>::new());
    assert!(overruns.lock().unwrap().is_empty());
    assert_eq!(trajectory.termination, Termination::Stop);
    assert_eq!(trajectory.turns, 3);
    assert_eq!(trajectory.reward, Some(1.0));
    assert_eq!(trajectory.error, None);
    assert_every_call_answered(&trajectory.messages);
    let results = tool_results(&trajectory);
    assert_eq!(
        results[0],
        "{\"output\": \"\", \"exit_code\": 0, \"error\": null}"
    );
    assert_eq!(
        results[1],
        "{\"output\": \"/workspace/sub\\n7\\nhello\\n\", \"exit_code\": 0, \"error\": null}"
    );
    assert!(results[2].contains("     1|hello"), "{}", results[2]);
    assert!(
        results[3].contains("\"bytes_written\": 2"),
        "{}",
        results[3]
    );
    let metrics = &trajectory.metrics;
    assert_eq!(
        (
            metrics.tool_calls_attempted,
            metrics.tool_calls_schema_valid,
            metrics.tool_calls_executed_ok,
            metrics.tool_calls_exec_error
        ),
        (4, 4, 4, 0)
    );
    // Reasoning kept: the server's field, and a <think> block moved out of the content.
    let assistants: Vec<_> = trajectory
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .collect();
    assert_eq!(
        assistants[1].reasoning_content.as_deref(),
        Some("three at once")
    );
    assert_eq!(assistants[2].reasoning_content.as_deref(), Some("all done"));
    assert_eq!(assistants[2].content, "finished");
    // The model saw the tools, the system prompt, and each turn's results.
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body["tools"].as_array().unwrap().len(), 3);
    assert_eq!(
        requests[0].body["messages"][0]["content"],
        "You are a test agent."
    );
    assert_eq!(requests[2].messages().len(), 2 + 2 + 4);
    assert_eq!(trajectory.timings.turns.len(), 3);
    all_free(&slots, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_answered_as_errors_and_counted() {
    let Some(slots) = slots(1).await else { return };
    let script = Script::new().on(
        "bad calls",
        vec![
            Reply::calls(&[
                ("a", "browser", "{}"),
                ("b", "terminal", "{\"command\": \"ls"),
                ("c", "terminal", "{\"command\": \"  \"}"),
                ("d", "terminal", "\"echo normalised\""),
                ("d", "terminal", "{\"cmd\": \"ls\"}"),
            ]),
            Reply::text("ok"),
        ],
    );
    let (fake, _) = fake(script, FakeConfig::default()).await;
    let trajectory = rollout(
        &slots,
        &model(&fake),
        &task("t", "bad calls"),
        &settings(native()),
    )
    .await;
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_every_call_answered(&trajectory.messages);
    let results = tool_results(&trajectory);
    assert_eq!(
        results[0],
        "{\"error\": \"Unknown tool 'browser'. Available tools: ['read_file', 'terminal', 'write_file']\"}"
    );
    assert!(
        results[1].starts_with("{\"error\": \"Invalid JSON in tool arguments: "),
        "{}",
        results[1]
    );
    assert!(
        results[1].ends_with("Please retry with valid JSON.\"}"),
        "{}",
        results[1]
    );
    assert!(results[2].contains("'command' is blank"), "{}", results[2]);
    assert_eq!(
        results[3],
        "{\"output\": \"normalised\\n\", \"exit_code\": 0, \"error\": null}"
    );
    assert!(
        results[4].contains("missing required string argument 'command'"),
        "{}",
        results[4]
    );
    // The repeated id was replaced so each answer is unambiguous.
    let ids: Vec<_> = trajectory.messages[2]
        .tool_calls
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_ne!(ids[3], ids[4]);
    let m = &trajectory.metrics;
    assert_eq!(m.unknown_tool, 1);
    assert_eq!(m.tool_calls_attempted, 4);
    assert_eq!(m.invalid_json, 1);
    assert_eq!(m.args_normalised, 1);
    assert_eq!(m.tool_calls_schema_valid, 0);
    assert_eq!(m.tool_calls_executed_ok, 1);
    assert_eq!(m.tool_calls_exec_error, 4);
    assert_eq!(
        m.tool_calls_attempted + m.unknown_tool,
        m.tool_calls_executed_ok + m.tool_calls_exec_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_the_same_prompt_resent() {
    let Some(slots) = slots(1).await else { return };
    let script = Script::new().on(
        "flaky",
        vec![
            Reply::status(429, Some(0)),
            Reply::status(500, None),
            Reply::Drop,
            Reply::terminal("c1", "echo survived"),
            Reply::status(503, None),
            Reply::text("done"),
        ],
    );
    let (fake, overruns) = fake(script, FakeConfig::default()).await;
    let trajectory = rollout(
        &slots,
        &model(&fake),
        &task("t", "flaky"),
        &settings(native()),
    )
    .await;
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert!(overruns.lock().unwrap().is_empty());
    assert_eq!(
        trajectory.termination,
        Termination::Stop,
        "{:?}",
        trajectory.error
    );
    assert_eq!(trajectory.turns, 2);
    assert_eq!(trajectory.metrics.model_retries, 4);
    let requests = fake.requests();
    assert_eq!(requests.len(), 6);
    for retry in &requests[1..4] {
        assert_eq!(
            retry.body, requests[0].body,
            "a retry re-sends the same request"
        );
    }
    assert_eq!(requests[4].body, requests[5].body);
    assert!(tool_results(&trajectory)[0].contains("survived"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_errors_end_the_rollout_with_their_termination() {
    let Some(slots) = slots(1).await else { return };
    let context_body =
        "{\"error\": {\"message\": \"This model's maximum context length is 8192 tokens\"}}";
    let script = Script::new()
        .on("bad request", vec![Reply::status(400, None)])
        .on("always down", vec![Reply::status(502, None); 10])
        .on(
            "too long",
            vec![Reply::Status {
                status: 400,
                body: context_body.to_owned(),
                retry_after: None,
            }],
        )
        .on(
            "cut off",
            vec![Reply::terminal("c1", "echo never").with_finish_reason("length")],
        );
    let (fake, _) = fake(script, FakeConfig::default()).await;
    let model = model(&fake);
    let mut settings = settings(native());

    let mut with_verify = task("t1", "bad request");
    with_verify.verify = Some("true".to_owned());
    let trajectory = rollout(&slots, &model, &with_verify, &settings).await;
    assert_eq!(trajectory.termination, Termination::ApiError);
    assert!(trajectory.error.as_deref().unwrap().contains("400"));
    assert_eq!(trajectory.turns, 0);
    assert_eq!(
        trajectory.reward, None,
        "no verifier when the model never answered"
    );
    assert_eq!(fake.requests().len(), 1, "a 400 is not retried");

    settings.agent.max_turns = 3;
    let trajectory = rollout(&slots, &model, &task("t2", "always down"), &settings).await;
    assert_eq!(trajectory.termination, Termination::ApiError);
    assert!(
        trajectory
            .error
            .as_deref()
            .unwrap()
            .contains("502 after 6 attempt"),
        "{:?}",
        trajectory.error
    );
    // The failed turn still reports its retries and its time.
    assert_eq!(trajectory.metrics.model_retries, 5);
    assert_eq!(trajectory.timings.turns.len(), 1);
    assert!(trajectory.timings.turns[0].model_ms > 0.0);

    let trajectory = rollout(&slots, &model, &task("t3", "too long"), &settings).await;
    assert_eq!(trajectory.termination, Termination::Context);

    let trajectory = rollout(&slots, &model, &task("t4", "cut off"), &settings).await;
    assert_eq!(trajectory.termination, Termination::Length);
    assert_eq!(trajectory.turns, 1);
    assert_eq!(trajectory.metrics.calls_dropped_on_length, 1);
    assert_eq!(trajectory.dropped_tool_calls.len(), 1);
    assert_eq!(trajectory.dropped_tool_calls[0].id, "c1");
    assert_eq!(trajectory.metrics.tool_calls_attempted, 0);
    assert_every_call_answered(&trajectory.messages);
    assert_eq!(fake.violations(), Vec::<String>::new());
    all_free(&slots, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_tool_calls_are_parsed_leniently_and_tools_go_in_the_system_prompt() {
    let Some(slots) = slots(1).await else { return };
    let script = Script::new().on(
        "text calls",
        vec![
            Reply::text(
                "<think>plan</think>Running it.\n<tool_call>{\"name\": \"terminal\", \"arguments\": {\"command\": \"echo one\"}}</tool_call>",
            ),
            // A bad call beside a good one: the good one still runs (lenient).
            Reply::text(
                "<tool_call>{\"name\": \"terminal\", \"arguments\": {\"command\": \"echo two\"}}</tool_call>\n<tool_call>{not json}</tool_call>",
            ),
            // The model stopped before closing its call.
            Reply::text("<tool_call>{\"name\": \"terminal\", \"arguments\": {\"command\": \"echo three\""),
            Reply::text("done"),
        ],
    );
    let (fake, _) = fake(script, FakeConfig::default()).await;
    let trajectory = rollout(
        &slots,
        &model(&fake),
        &task("t", "text calls"),
        &settings(hermes()),
    )
    .await;
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_eq!(
        trajectory.termination,
        Termination::Stop,
        "{:?}",
        trajectory.error
    );
    let results = tool_results(&trajectory);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].contains("one\\n"));
    assert!(results[1].contains("two\\n"));
    assert!(results[2].contains("three\\n"));
    assert_eq!(trajectory.metrics.parse_dropped, 1);
    assert_eq!(trajectory.metrics.parse_recovered_truncated, 1);
    assert_eq!(
        trajectory.messages[2].reasoning_content.as_deref(),
        Some("plan")
    );
    assert_eq!(trajectory.messages[2].content, "Running it.");
    let requests = fake.requests();
    let first = &requests[0];
    assert!(first.body.get("tools").is_none());
    // Later turns carry the history as text: the model's calls in its own format, the results
    // as <tool_response> blocks in a user turn.
    let second = requests[1].messages();
    let assistant = second[second.len() - 2]["content"].as_str().unwrap();
    assert!(
        assistant.starts_with("Running it.\n<tool_call>\n{\"name\": \"terminal\""),
        "{assistant}"
    );
    assert!(second[second.len() - 2].get("tool_calls").is_none());
    assert_eq!(second.last().unwrap()["role"], "user");
    assert!(
        second.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .starts_with("<tool_response>\n{\"tool_call_id\": ")
    );
    let system = first.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a test agent.") && system.contains("<tools>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_never_exceeds_the_context_budget_and_the_trajectory_stays_whole() {
    let Some(slots) = slots(1).await else { return };
    let big = r"head -c 4000 /dev/zero | tr '\0' x";
    let mut replies: Vec<Reply> = (0..6)
        .map(|i| Reply::terminal(&format!("c{i}"), big))
        .collect();
    replies.push(Reply::text("done"));
    let script = Script::new()
        .on("fill the context", replies)
        .on("tiny budget", vec![Reply::text("never asked")]);
    let budget = 4000;
    let (fake, _) = fake(
        script,
        FakeConfig {
            max_prompt_tokens: Some(budget),
            ..FakeConfig::default()
        },
    )
    .await;
    let mut settings = settings(native());
    settings.agent.max_context_tokens = Some(budget);
    let trajectory = rollout(
        &slots,
        &model(&fake),
        &task("t", "fill the context"),
        &settings,
    )
    .await;
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_eq!(
        trajectory.termination,
        Termination::Stop,
        "{:?}",
        trajectory.error
    );
    assert!(trajectory.context_truncated);
    assert!(trajectory.metrics.context_cuts > 0);
    for result in tool_results(&trajectory) {
        assert!(result.len() > 4000, "the trajectory keeps whole results");
    }
    // Later requests were cut: fewer messages than the trajectory had then.
    let last = fake.requests().last().unwrap().messages().len();
    assert!(last < trajectory.messages.len() - 1, "{last}");

    settings.agent.max_context_tokens = Some(60);
    let trajectory = rollout(&slots, &model(&fake), &task("t2", "tiny budget"), &settings).await;
    assert_eq!(trajectory.termination, Termination::Context);
    assert_eq!(trajectory.turns, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_deadline_stops_a_long_command_and_the_slot_is_released() {
    let Some(slots) = slots(1).await else { return };
    let script = Script::new().on(
        "slow",
        vec![Reply::calls(&[
            ("c1", "terminal", "{\"command\": \"sleep 30\"}"),
            ("c2", "terminal", "{\"command\": \"echo never\"}"),
        ])],
    );
    let (fake, _) = fake(script, FakeConfig::default()).await;
    let mut task = task("t", "slow");
    task.timeout_s = Some(1.5);
    task.verify = Some("echo 0.25".to_owned());
    let started = std::time::Instant::now();
    let trajectory = rollout(&slots, &model(&fake), &task, &settings(native())).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(trajectory.termination, Termination::Timeout);
    assert_every_call_answered(&trajectory.messages);
    let results = tool_results(&trajectory);
    assert!(results[1].contains("not run"), "{}", results[1]);
    // The verifier still judges the slot; its last line is the reward.
    assert_eq!(trajectory.reward, Some(0.25));
    all_free(&slots, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_setup_ends_the_rollout_before_the_model_is_asked() {
    let Some(slots) = slots(1).await else { return };
    let (fake, _) = fake(Script::new(), FakeConfig::default()).await;
    let mut task = task("t", "never asked");
    task.setup = vec!["echo ok > a".to_owned(), "echo broken; exit 3".to_owned()];
    task.verify = Some("true".to_owned());
    let trajectory = rollout(&slots, &model(&fake), &task, &settings(native())).await;
    assert_eq!(trajectory.termination, Termination::ToolFatal);
    let error = trajectory.error.unwrap();
    assert!(
        error.contains("setup command 2") && error.contains("exit code 3"),
        "{error}"
    );
    assert_eq!(trajectory.reward, None);
    assert_eq!(fake.request_count(), 0);

    // A setup that outlives the rollout's deadline is a timeout, not a broken slot.
    let mut slow = task.clone();
    slow.setup = vec!["sleep 20".to_owned()];
    slow.timeout_s = Some(1.0);
    let started = std::time::Instant::now();
    let trajectory = rollout(&slots, &model(&fake), &slow, &settings(native())).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(trajectory.termination, Termination::Timeout);
    assert_eq!(fake.request_count(), 0);
    all_free(&slots, 1).await;
}

/// Tools whose slot dies at the first call.
struct DeadSlot;

impl slotbox_rollout::tools::Toolbox for DeadSlot {
    fn names(&self) -> &[&'static str] {
        &slotbox_rollout::tools::TOOL_NAMES
    }

    fn schemas(&self) -> &serde_json::Value {
        slotbox_rollout::tools::schemas()
    }

    async fn call(
        &self,
        _: &str,
        _: &serde_json::Map<String, serde_json::Value>,
        _: slotbox_rollout::budget::Deadline,
    ) -> slotbox_rollout::tools::Answer {
        slotbox_rollout::tools::Answer {
            content: "{\"error\": \"slot lost\"}".to_owned(),
            outcome: slotbox_rollout::tools::Outcome::Fatal("slot lost".to_owned()),
        }
    }
}

#[tokio::test]
async fn a_dead_slot_ends_the_rollout_after_every_call_is_answered() {
    let script = Script::new().on(
        "dies",
        vec![
            Reply::calls(&[
                ("a", "terminal", "{\"command\": \"true\"}"),
                ("b", "nope", "{}"),
                ("c", "terminal", "{\"command\": \"true\"}"),
            ]),
            Reply::text("never asked"),
        ],
    );
    let (fake, _) = fake(script, FakeConfig::default()).await;
    let settings = settings(native());
    let mut messages = vec![slotbox_rollout::message::Message::user("dies")];
    let outcome = slotbox_rollout::agent::run_loop(
        &model(&fake),
        &DeadSlot,
        &settings.agent,
        &mut messages,
        slotbox_rollout::budget::Deadline::after(Duration::from_secs(30)),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.termination, Termination::ToolFatal);
    assert!(outcome.error.unwrap().contains("slot lost"));
    assert_eq!(fake.request_count(), 1);
    assert_every_call_answered(&messages);
    assert_eq!(messages.len(), 5);
    assert!(messages[3].content.contains("not run"));
    let m = outcome.metrics;
    assert_eq!(
        (
            m.tool_calls_attempted,
            m.unknown_tool,
            m.tool_calls_exec_error
        ),
        (2, 1, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_and_is_retried() {
    let Some(slots) = slots(1).await else { return };
    let replies = vec![
        Reply::Stall,
        Reply::terminal("c1", "echo after the stall"),
        Reply::text("done"),
    ];
    // Long enough that no real answer on a loaded machine times out too.
    let timeout = Duration::from_secs(2);
    let (trajectory, fake) = scripted(&slots, &task("t", "stall once"), replies, timeout).await;
    assert_eq!(
        trajectory.termination,
        Termination::Stop,
        "{:?}",
        trajectory.error
    );
    assert_eq!(trajectory.metrics.model_retries, 1);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body, requests[1].body, "the same request again");
    assert!(tool_results(&trajectory)[0].contains("after the stall"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_deadline_bounds_a_model_that_never_answers() {
    let Some(slots) = slots(1).await else { return };
    let mut task = task("t", "stuck");
    task.timeout_s = Some(1.0);
    let started = std::time::Instant::now();
    // Each request may take 30 s: only the rollout's deadline can end this one early.
    let timeout = Duration::from_secs(30);
    let (trajectory, _) = scripted(&slots, &task, vec![Reply::Stall; 4], timeout).await;
    assert_eq!(trajectory.termination, Termination::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(trajectory.turns, 0);
    all_free(&slots, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_s_max_turns_ends_the_rollout_with_every_call_answered() {
    let Some(slots) = slots(1).await else { return };
    let replies = vec![
        Reply::terminal("c1", "echo one"),
        Reply::terminal("c2", "echo two"),
    ];
    let mut task = task("t", "keep going");
    // Below the settings' 10: the task's own limit wins.
    task.max_turns = Some(2);
    let (trajectory, fake) = scripted(&slots, &task, replies, Duration::from_secs(30)).await;
    assert_eq!(trajectory.termination, Termination::MaxTurns);
    assert_eq!(trajectory.turns, 2);
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(trajectory.messages.last().unwrap().role, Role::Tool);
    assert_every_call_answered(&trajectory.messages);
    assert_eq!(tool_results(&trajectory).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_ids_a_server_reuses_across_turns_are_made_unique() {
    let Some(slots) = slots(1).await else { return };
    let replies = vec![
        Reply::terminal("call_0", "echo a"),
        Reply::terminal("call_0", "echo b"),
        Reply::text("done"),
    ];
    // The fake checks ids across the whole conversation it is sent.
    let timeout = Duration::from_secs(30);
    let (trajectory, _) = scripted(&slots, &task("t", "same ids"), replies, timeout).await;
    assert_eq!(trajectory.termination, Termination::Stop);
    let ids: Vec<String> = trajectory
        .messages
        .iter()
        .flat_map(|message| message.tool_calls.iter().map(|call| call.id.clone()))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "call_0", "a first use keeps its id");
    assert_ne!(ids[0], ids[1]);
    assert_every_call_answered(&trajectory.messages);
}

/// A TCP front for `upstream` that closes its first `refuse` connections at once (a pool that
/// is restarting, a proxy without its upstream) and relays the rest. Returns its address and
/// how many connections it closed.
async fn flaky_front(
    upstream: std::net::SocketAddr,
    refuse: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if counter.load(std::sync::atomic::Ordering::SeqCst) < refuse {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leasing_rides_out_a_pool_that_fails_for_a_while() {
    let Some(slots) = slots(1).await else { return };
    let (front, closed) = flaky_front(slots.address, 3).await;
    let client = slotbox_client::Client::new(format!("http://{front}"));
    let script = Script::new().on(
        "flaky pool",
        vec![Reply::terminal("c1", "echo leased"), Reply::text("done")],
    );
    let (fake, overruns) = fake(script, FakeConfig::default()).await;
    let trajectory = slotbox_rollout::rollout::run_rollout(
        &client,
        &model(&fake),
        &task("t", "flaky pool"),
        0,
        &settings(native()),
        &CancellationToken::new(),
    )
    .await
    .expect("not cancelled");
    assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert!(overruns.lock().unwrap().is_empty());
    assert_eq!(
        trajectory.termination,
        Termination::Stop,
        "{:?}",
        trajectory.error
    );
    assert!(tool_results(&trajectory)[0].contains("leased"));
    all_free(&slots, 1).await;
}
