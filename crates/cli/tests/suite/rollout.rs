//! `slotbox rollout` as a process: a tasks file end to end against the fake model server, with
//! the embedded pool's real bubblewrap slots; Ctrl-C mid-run.

use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use slotbox_fake_openai::FakeConfig;
use slotbox_fake_openai::FakeModel;
use slotbox_fake_openai::Reply;

use super::backends;
use super::up::children_of;

/// A runtime for the fake model, beside the synchronous test.
fn fake_model(
    policy: impl Fn(&slotbox_fake_openai::Request) -> Reply + Send + Sync + 'static,
) -> (tokio::runtime::Runtime, FakeModel) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime.block_on(FakeModel::start(
        FakeConfig {
            expect_model: Some("fake-model".to_owned()),
            expect_api_key: Some("sk-test".to_owned()),
            ..FakeConfig::default()
        },
        policy,
    ));
    (runtime, fake.unwrap())
}

fn rollout_command(dir: &std::path::Path, fake: &FakeModel, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotbox"));
    command
        .current_dir(dir)
        .args(["rollout", "--tasks", "tasks.jsonl", "--model-url"])
        .arg(fake.url())
        .args([
            "--model",
            "fake-model",
            "--api-key-env",
            "TEST_KEY",
            "--out",
            "out.jsonl",
        ])
        .args(extra)
        .env("TEST_KEY", "sk-test")
        .env_remove("SLOTBOX_POOL_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Checks that a run exited 0 and the fake saw no protocol breach; returns its stdout and the
/// trajectories it wrote to `out.jsonl`.
fn succeeded(
    output: &std::process::Output,
    fake: &FakeModel,
    dir: &std::path::Path,
) -> (String, Vec<serde_json::Value>) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    let lines = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (stdout, lines)
}

#[test]
fn a_tasks_file_runs_end_to_end_in_real_slots() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let (_runtime, fake) = fake_model(|request| match request.turn {
        0 => Reply::terminal("c1", "cat seed.txt > answer.txt; hostname"),
        _ => Reply::text("done"),
    });
    let dir = tempfile::tempdir().unwrap();
    let tasks = [
        r#"{"id": "pass", "prompt": "copy the seed", "setup": ["echo 42 > seed.txt"], "verify": "grep -qx 42 answer.txt"}"#,
        r#"{"id": "partial", "prompt": "copy it again", "setup": ["echo 7 > seed.txt"], "verify": "echo checking; echo 0.5"}"#,
        r#"{"id": "broken", "prompt": "setup fails", "setup": ["exit 9"], "verify": "true"}"#,
    ];
    std::fs::write(dir.path().join("tasks.jsonl"), tasks.join("\n")).unwrap();
    let output = rollout_command(
        dir.path(),
        &fake,
        &[
            "--concurrency",
            "2",
            "--format",
            "sharegpt,atropos",
            "--summary-json",
            "summary.json",
        ],
    )
    .output()
    .unwrap();
    let (stdout, lines) = succeeded(&output, &fake, dir.path());
    assert!(stdout.contains("pass rate"), "{stdout}");
    assert!(stdout.contains("tool_fatal 1"), "{stdout}");
    assert_eq!(lines.len(), 3);
    let by_id = |id: &str| lines.iter().find(|line| line["task_id"] == id).unwrap();
    assert_eq!(by_id("pass")["reward"], 1.0);
    assert_eq!(by_id("partial")["reward"], 0.5);
    assert_eq!(by_id("broken")["termination"], "tool_fatal");
    // The command ran inside the sandbox (its hostname), not on the host.
    let result = by_id("pass")["messages"][2]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(result.contains("slotbox"), "{result}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["trajectories"], 3);
    assert_eq!(summary["passed"], 1);
    assert!(dir.path().join("out.sharegpt.jsonl").exists());
    assert!(dir.path().join("out.atropos.jsonl").exists());
}

/// A model served without tool-call support: calls arrive as hermes text, the tools are
/// described in the system prompt instead of `tools`, and each task runs as a group of samples.
#[test]
fn a_text_parser_run_with_samples_parses_calls_from_the_text() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let (_runtime, fake) = fake_model(move |request| {
        seen.lock().unwrap().push(request.body.clone());
        match request.turn {
            0 => Reply::text(
                "Let me look.\n<tool_call>\n{\"name\": \"terminal\", \"arguments\": {\"command\": \"echo from-text-call\"}}\n</tool_call>",
            ),
            _ => Reply::text("done"),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.jsonl"),
        r#"{"id": "text", "prompt": "say it", "verify": "true"}"#,
    )
    .unwrap();
    let output = rollout_command(
        dir.path(),
        &fake,
        &[
            "--parser",
            "hermes",
            "--samples",
            "2",
            "--summary-json",
            "summary.json",
        ],
    )
    .output()
    .unwrap();
    let (_, lines) = succeeded(&output, &fake, dir.path());
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["termination"], "stop", "{line}");
        assert_eq!(line["reward"], 1.0);
        let messages = line["messages"].as_array().unwrap();
        // The trajectory keeps the OpenAI shape: a parsed call, answered by a tool message.
        let call = messages
            .iter()
            .find_map(|message| message["tool_calls"].as_array())
            .unwrap();
        assert_eq!(call[0]["function"]["name"], "terminal");
        let answer = messages
            .iter()
            .find(|message| message["role"] == "tool")
            .unwrap();
        assert!(
            answer["content"]
                .as_str()
                .unwrap()
                .contains("from-text-call"),
            "{answer}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tasks"], 1);
    assert_eq!(summary["trajectories"], 2);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 4, "two turns per sample");
    for body in bodies.iter() {
        assert!(
            body.get("tools").is_none(),
            "tools sent to a text-parser model"
        );
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("<tools>"), "{system}");
    }
}

#[test]
fn ctrl_c_writes_what_finished_and_leaves_no_sandbox_behind() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let (_runtime, fake) = fake_model(|request| {
        if request.key == "quick" {
            Reply::text("done")
        } else {
            Reply::terminal("c1", "sleep 120")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let tasks = [
        r#"{"id": "q", "prompt": "quick"}"#,
        r#"{"id": "s1", "prompt": "slow 1"}"#,
        r#"{"id": "s2", "prompt": "slow 2"}"#,
    ];
    std::fs::write(dir.path().join("tasks.jsonl"), tasks.join("\n")).unwrap();
    let mut child = rollout_command(dir.path(), &fake, &["--concurrency", "3"])
        .spawn()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let waited = Instant::now();
    // The quick one written, and both slow ones inside their commands (three model requests).
    while std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
        || fake.request_count() < 3
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the run never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "rollout exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let servers = children_of(child.id());
    assert!(
        !servers.is_empty(),
        "the embedded pool's servers are children"
    );
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "{:?}",
        stopped.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(130),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("(2 unfinished)"), "{stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 1);
    assert!(written.contains("\"task_id\":\"q\""));
    for pid in servers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "a sandbox server outlived the run"
        );
    }
}

#[test]
fn bad_input_is_refused_before_anything_starts() {
    let (_runtime, fake) = fake_model(|_| Reply::text("never asked"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[rollout]\nsamples = 0\n").unwrap();
    let cases: [(&str, &[&str], &str); 5] = [
        ("{\"id\": \"a\"}", &[], "tasks file line 1"),
        (
            "{\"id\": \"a\", \"prompt\": \"p\", \"verfy\": \"x\"}",
            &[],
            "verfy",
        ),
        (
            "{\"id\": \"a\", \"prompt\": \"p\"}",
            &["--parser", "nope"],
            "Tool call parser 'nope' not found",
        ),
        (
            "{\"id\": \"a\", \"prompt\": \"p\"}",
            &["--extra-body", "[1]"],
            "--extra-body must be a JSON object",
        ),
        (
            "{\"id\": \"a\", \"prompt\": \"p\"}",
            &["--config", "c.toml"],
            "[rollout] samples) must be in 1..=10000, got 0",
        ),
    ];
    for (tasks, extra, needle) in cases {
        std::fs::write(dir.path().join("tasks.jsonl"), tasks).unwrap();
        let output = rollout_command(dir.path(), &fake, extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
        assert!(
            !dir.path().join("out.jsonl").exists(),
            "no output file for a refused run"
        );
    }
    assert_eq!(fake.request_count(), 0);
}
