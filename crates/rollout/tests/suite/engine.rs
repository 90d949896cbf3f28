//! Whole runs: many rollouts over few slots, the output files, cancellation.

use std::time::Duration;

use super::*;
use slotbox_fake_openai::FakeConfig;
use slotbox_fake_openai::FakeModel;
use slotbox_fake_openai::Reply;
use slotbox_rollout::agent::CallFormat;
use slotbox_rollout::engine::RunSettings;
use slotbox_rollout::engine::Silent;
use slotbox_rollout::output::Format;
use slotbox_rollout::output::Sink;
use slotbox_rollout::rollout::Trajectory;
use tokio_util::sync::CancellationToken;

/// Two turns per conversation: write the task's file, then stop.
fn two_turns(request: &slotbox_fake_openai::Request) -> Reply {
    if request.turn == 0 {
        let name = request.key.replace(' ', "_");
        Reply::terminal("c1", &format!("echo {name} > out.txt"))
    } else {
        Reply::text("done").with_reasoning("checked")
    }
}

fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rollouts_share_few_slots_and_every_output_is_written() {
    let Some(slots) = slots(3).await else { return };
    let fake = FakeModel::start(
        FakeConfig {
            expect_model: Some("m".to_owned()),
            latency: Duration::from_millis(5),
            ..FakeConfig::default()
        },
        two_turns,
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut task = task(&format!("t{i}"), &format!("task {i}"));
            // Each slot is fresh for each lease: only this task's file may be there.
            task.verify = Some(format!(
                "test \"$(ls)\" = out.txt && grep -qx task_{i} out.txt"
            ));
            task
        })
        .collect();
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("run.jsonl");
    let mut sink = Sink::create(&out, &[Format::ShareGpt, Format::Atropos], 2).unwrap();
    let report = slotbox_rollout::engine::run(
        slots.client.clone(),
        model(&fake),
        tasks,
        RunSettings {
            concurrency: 5,
            samples: 2,
            rollout: settings(CallFormat::Native),
        },
        &mut sink,
        &Silent,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    drop(sink);
    assert_eq!(fake.violations(), Vec::<String>::new());
    let summary = &report.summary;
    assert!(!report.cancelled);
    assert_eq!(summary.trajectories, 16);
    assert_eq!(summary.passed, 16, "{}", summary.table());
    assert_eq!(summary.terminations["stop"], 16);
    assert_eq!(summary.tool_calls, 16);
    assert_eq!(summary.tool_errors, 0);

    let native = read_lines(&out);
    assert_eq!(native.len(), 16);
    let trajectory: Trajectory = serde_json::from_value(native[0].clone()).unwrap();
    assert_eq!(trajectory.reward, Some(1.0));
    for field in [
        "task_id",
        "messages",
        "reward",
        "termination",
        "turns",
        "metrics",
        "timings",
    ] {
        assert!(native[0].get(field).is_some(), "missing {field}");
    }

    let sharegpt = read_lines(&directory.path().join("run.sharegpt.jsonl"));
    assert_eq!(sharegpt.len(), 16);
    let conversation = sharegpt[0]["conversations"].as_array().unwrap();
    let froms: Vec<&str> = conversation
        .iter()
        .map(|t| t["from"].as_str().unwrap())
        .collect();
    assert_eq!(froms, ["system", "human", "gpt", "tool", "gpt"]);
    assert!(
        conversation[0]["value"]
            .as_str()
            .unwrap()
            .contains("<tools>")
    );
    let call = conversation[2]["value"].as_str().unwrap();
    assert!(call.starts_with("<think>\n\n</think>\n"), "{call}");
    assert!(
        call.contains("<tool_call>\n{\"name\": \"terminal\", \"arguments\": {\"command\": "),
        "{call}"
    );
    assert!(
        conversation[3]["value"]
            .as_str()
            .unwrap()
            .starts_with("<tool_response>\n{\"tool_call_id\": \"c1\", \"name\": \"terminal\"")
    );
    assert!(
        conversation[4]["value"]
            .as_str()
            .unwrap()
            .starts_with("<think>\nchecked\n</think>\ndone")
    );
    assert_eq!(sharegpt[0]["completed"], true);

    let groups = read_lines(&directory.path().join("run.atropos.jsonl"));
    assert_eq!(groups.len(), 8, "one group per task");
    for group in &groups {
        assert_eq!(group["scores"], serde_json::json!([1.0, 1.0]));
        assert_eq!(group["group_overrides"]["group_size"], 2);
        assert_eq!(group["messages"].as_array().unwrap().len(), 2);
    }
    all_free(&slots, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_keeps_finished_trajectories_and_releases_every_slot() {
    // A slot each, so the quick one never queues behind the slow ones.
    let Some(slots) = slots(3).await else { return };
    // "quick" finishes at once; the others wait on a model that takes 30 s per answer.
    let fake = FakeModel::start(
        FakeConfig {
            expect_model: Some("m".to_owned()),
            ..FakeConfig::default()
        },
        |request| {
            if request.key == "quick" {
                Reply::text("done")
            } else {
                Reply::terminal("c", "sleep 30")
            }
        },
    )
    .await
    .unwrap();
    let tasks = vec![
        task("q", "quick"),
        task("s1", "slow one"),
        task("s2", "slow two"),
    ];
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("run.jsonl");
    let mut sink = Sink::create(&out, &[], 1).unwrap();
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        let client = slots.client.clone();
        let out = out.clone();
        tokio::spawn(async move {
            // Once "quick" is written and both slots hold slow rollouts, stop the run.
            loop {
                let health = client.health().await.unwrap();
                let written = std::fs::read_to_string(&out)
                    .unwrap_or_default()
                    .lines()
                    .count();
                if health.leased == 2 && written == 1 {
                    // Let the slow commands start.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cancel.cancel();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let report = slotbox_rollout::engine::run(
        slots.client.clone(),
        model(&fake),
        tasks,
        RunSettings {
            concurrency: 3,
            samples: 1,
            rollout: settings(CallFormat::Native),
        },
        &mut sink,
        &Silent,
        cancel,
    )
    .await
    .unwrap();
    canceller.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(report.cancelled);
    let written = read_lines(&out);
    assert_eq!(written.len(), 1, "only the finished rollout is written");
    assert_eq!(written[0]["task_id"], "q");
    assert_eq!(report.summary.unfinished, 2);
    all_free(&slots, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_beyond_the_slots_queue_instead_of_failing() {
    let Some(slots) = slots(1).await else { return };
    let fake = FakeModel::start(
        FakeConfig {
            expect_model: Some("m".to_owned()),
            ..FakeConfig::default()
        },
        two_turns,
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let mut task = task(&format!("t{i}"), &format!("task {i}"));
            task.verify = Some(format!("grep -qx task_{i} out.txt"));
            task
        })
        .collect();
    let directory = tempfile::tempdir().unwrap();
    let mut sink = Sink::create(&directory.path().join("run.jsonl"), &[], 1).unwrap();
    let mut settings = settings(CallFormat::Native);
    // No limit on the wait: four rollouts share the one slot in turn.
    settings.lease_wait = None;
    let report = slotbox_rollout::engine::run(
        slots.client.clone(),
        model(&fake),
        tasks,
        RunSettings {
            concurrency: 4,
            samples: 1,
            rollout: settings,
        },
        &mut sink,
        &Silent,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.summary.passed, 4, "{}", report.summary.table());
    assert_eq!(fake.violations(), Vec::<String>::new());
    all_free(&slots, 1).await;
}
