//! Shared set-up: a real sandbox server (bubblewrap slots, in-process, on loopback) and the fake
//! model server, wired to the rollout engine.

mod agent_loop;
mod engine;

use std::time::Duration;

use slotbox_client::Client;
use slotbox_fake_openai::FakeConfig;
use slotbox_fake_openai::FakeModel;
use slotbox_fake_openai::Script;
use slotbox_rollout::agent::CallFormat;
use slotbox_rollout::agent::LoopSettings;
use slotbox_rollout::budget::RetryPolicy;
use slotbox_rollout::message::Message;
use slotbox_rollout::message::Role;
use slotbox_rollout::model::ModelClient;
use slotbox_rollout::model::ModelSettings;
use slotbox_rollout::rollout::RolloutSettings;
use slotbox_rollout::rollout::Trajectory;
use slotbox_rollout::task::Task;
use tokio_util::sync::CancellationToken;

/// A sandbox server with `slots` bubblewrap slots; `None` when bwrap is unavailable (a skip on
/// a laptop, a failure in CI).
pub(crate) struct Slots {
    pub(crate) client: Client,
    /// The server's `host:port`.
    pub(crate) address: std::net::SocketAddr,
    _data: tempfile::TempDir,
}

pub(crate) async fn slots(count: usize) -> Option<Slots> {
    let data = tempfile::tempdir().unwrap();
    let mut bwrap = slotbox_exec::BubblewrapConfig::default();
    let agent = match slotbox_test_support::workspace_binary("slotbox-sandbox-agent") {
        Ok(path) => path,
        Err(reason) => {
            slotbox_test_support::require("the sandbox agent binary", Err(reason));
            return None;
        }
    };
    bwrap.agent = Some(slotbox_exec::AgentCommand {
        program: agent,
        args: Vec::new(),
    });
    let layout = slotbox_exec::probe::host_layout().unwrap();
    let probe = slotbox_exec::probe::bubblewrap(&bwrap, &layout, data.path())
        .await
        .map_err(|error| error.to_string());
    if !slotbox_test_support::require("bubblewrap", probe) {
        return None;
    }
    let config = slotbox_server::ServerConfig {
        slots: count,
        data_dir: data.path().join("data"),
        isolation: slotbox_server::Isolation::Bubblewrap(bwrap),
        token: None,
        limits: slotbox_server::Limits::default(),
    };
    let state = slotbox_server::AppState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(slotbox_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    Some(Slots {
        client: Client::new(format!("http://{address}")),
        address,
        _data: data,
    })
}

/// The fake with a script and protocol checks (model `m`, every request recorded).
pub(crate) async fn fake(
    script: Script,
    config: FakeConfig,
) -> (FakeModel, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (policy, overruns) = script.into_policy();
    let config = FakeConfig {
        expect_model: Some("m".to_owned()),
        record: true,
        ..config
    };
    (FakeModel::start(config, policy).await.unwrap(), overruns)
}

/// A model client for the fake, with quick retries.
pub(crate) fn model(fake: &FakeModel) -> ModelClient {
    model_with_timeout(fake, Duration::from_secs(30))
}

/// `model`, with `request_timeout` per request.
pub(crate) fn model_with_timeout(fake: &FakeModel, request_timeout: Duration) -> ModelClient {
    ModelClient::new(ModelSettings {
        url: fake.url(),
        model: "m".to_owned(),
        api_key: None,
        temperature: Some(1.0),
        max_tokens: None,
        extra_body: serde_json::Map::new(),
        request_timeout,
        retry: RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
    })
    .unwrap()
}

pub(crate) fn settings(format: CallFormat) -> RolloutSettings {
    RolloutSettings {
        agent: LoopSettings {
            max_turns: 10,
            format,
            mode: slotbox_toolcall::Mode::Lenient,
            max_context_tokens: None,
            send_tools: matches!(format, CallFormat::Native),
        },
        rollout_timeout: Duration::from_secs(60),
        command_timeout: Duration::from_secs(30),
        setup_timeout: Duration::from_secs(30),
        verify_timeout: Duration::from_secs(30),
        lease_wait: Some(Duration::from_secs(30)),
        default_system: Some("You are a test agent.".to_owned()),
    }
}

pub(crate) fn task(id: &str, prompt: &str) -> Task {
    Task {
        id: id.to_owned(),
        prompt: prompt.to_owned(),
        system: None,
        setup: Vec::new(),
        verify: None,
        max_turns: None,
        timeout_s: None,
    }
}

pub(crate) async fn rollout(
    slots: &Slots,
    model: &ModelClient,
    task: &Task,
    settings: &RolloutSettings,
) -> Trajectory {
    slotbox_rollout::rollout::run_rollout(
        &slots.client,
        model,
        task,
        0,
        settings,
        &CancellationToken::new(),
    )
    .await
    .expect("not cancelled")
}

/// Runs `task` in `slots` against the fake answering its prompt with `replies` (each request
/// timing out after `request_timeout`), and checks that the fake saw no protocol breach and the
/// script was not overrun. Returns the trajectory and the fake (for its requests).
pub(crate) async fn scripted(
    slots: &Slots,
    task: &Task,
    replies: Vec<slotbox_fake_openai::Reply>,
    request_timeout: Duration,
) -> (Trajectory, FakeModel) {
    let script = Script::new().on(task.prompt.clone(), replies);
    let (fake, overruns) = fake(script, FakeConfig::default()).await;
    let model = model_with_timeout(&fake, request_timeout);
    let trajectory = rollout(slots, &model, task, &settings(CallFormat::Native)).await;
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert!(overruns.lock().unwrap().is_empty());
    (trajectory, fake)
}

/// The trajectory answers every call exactly once, in order, right after its assistant message.
pub(crate) fn assert_every_call_answered(messages: &[Message]) {
    let mut open: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if message.role == Role::Tool {
            let id = message.tool_call_id.clone().unwrap();
            assert_eq!(
                open.first(),
                Some(&id),
                "message {index}: answer out of order"
            );
            open.remove(0);
        } else {
            assert!(
                open.is_empty(),
                "message {index}: calls {open:?} unanswered"
            );
            open = message
                .tool_calls
                .iter()
                .map(|call| call.id.clone())
                .collect();
        }
    }
    assert!(open.is_empty(), "calls {open:?} unanswered at the end");
}

/// The tool messages' contents.
pub(crate) fn tool_results(trajectory: &Trajectory) -> Vec<String> {
    trajectory
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| message.content.clone())
        .collect()
}

/// Waits until the server has every slot free again (leases released).
pub(crate) async fn all_free(slots: &Slots, total: usize) {
    for _ in 0..200 {
        let health = slots.client.health().await.unwrap();
        if health.free == total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "slots still leased: {:?}",
        slots.client.health().await.unwrap()
    );
}
