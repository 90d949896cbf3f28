//! Shared helpers: backends under test and a workspace per test.

mod docker;
mod isolation;
mod one_shot;
mod output;
mod process;
mod session;

use slotbox_exec::Backend;
use slotbox_exec::BubblewrapConfig;
use slotbox_exec::ExecRequest;
use slotbox_exec::Session;
use slotbox_exec::SessionConfig;
use slotbox_protocol::ExecResult;

/// A test's workspace and a session in it.
pub(crate) struct Fixture {
    pub(crate) workspace: tempfile::TempDir,
    pub(crate) session: Session,
}

impl Fixture {
    pub(crate) async fn run(&mut self, command: &str) -> ExecResult {
        self.session.exec(&ExecRequest::new(command)).await.unwrap()
    }

    pub(crate) async fn exec(&mut self, request: ExecRequest) -> ExecResult {
        self.session.exec(&request).await.unwrap()
    }
}

/// The bubblewrap backend, when this host can run it (see `slotbox_test_support::require`).
pub(crate) async fn bubblewrap() -> Option<Backend> {
    let config = BubblewrapConfig::default();
    let layout = slotbox_exec::probe::host_layout().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let probe = slotbox_exec::probe::bubblewrap(&config, &layout, scratch.path())
        .await
        .map_err(|error| error.to_string());
    slotbox_test_support::require("bubblewrap", probe).then_some(Backend::Bubblewrap(config))
}

/// Every backend available here: local always; bubblewrap when it works (required in CI), both
/// with a fresh sandbox per call and with one long-lived sandbox and its agent; docker when the
/// engine and the test image are there (required in CI). The suites that iterate this list are
/// the conformance suite of the session contract: a backend cannot drift from it.
pub(crate) async fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Local];
    if let Some(Backend::Bubblewrap(config)) = bubblewrap().await {
        backends.push(Backend::Bubblewrap(config.clone()));
        backends.push(Backend::Bubblewrap(with_agent(config)));
    }
    if let Some(docker) = docker().await {
        backends.push(docker);
    }
    backends
}

/// The docker backend with the test image (`SLOTBOX_TEST_IMAGE`, default `slotbox-sandbox:test`,
/// built by the test script), when the engine has it.
pub(crate) async fn docker() -> Option<Backend> {
    let image =
        std::env::var("SLOTBOX_TEST_IMAGE").unwrap_or_else(|_| "slotbox-sandbox:test".to_owned());
    let mut config = slotbox_exec::DockerConfig::new(
        image,
        slotbox_exec::AgentCommand {
            program: env!("CARGO_BIN_EXE_slotbox-sandbox-agent").into(),
            args: Vec::new(),
        },
    );
    // Small, so many test sessions fit at once on a small machine.
    config.memory_bytes = Some(512 << 20);
    let workspace = tempfile::tempdir().unwrap();
    let probe = Session::start(SessionConfig::new(
        Backend::Docker(config.clone()),
        workspace.path(),
    ))
    .await
    .map(drop)
    .map_err(|error| error.to_string());
    slotbox_test_support::require("the Docker Engine and the sandbox image", probe)
        .then_some(Backend::Docker(config))
}

/// `config` with the sandbox agent (this crate's `slotbox-sandbox-agent` binary).
pub(crate) fn with_agent(config: BubblewrapConfig) -> BubblewrapConfig {
    BubblewrapConfig {
        agent: Some(slotbox_exec::AgentCommand {
            program: env!("CARGO_BIN_EXE_slotbox-sandbox-agent").into(),
            args: Vec::new(),
        }),
        ..config
    }
}

pub(crate) async fn fixture(backend: &Backend) -> Fixture {
    let workspace = tempfile::tempdir().unwrap();
    let session = Session::start(SessionConfig::new(backend.clone(), workspace.path()))
        .await
        .unwrap();
    Fixture { workspace, session }
}

/// The workspace path as commands in `backend` see it.
pub(crate) fn inside(fixture: &Fixture) -> String {
    fixture
        .session
        .backend()
        .workspace_path(fixture.workspace.path())
        .unwrap()
}

pub(crate) use slotbox_test_support::process_alive;
