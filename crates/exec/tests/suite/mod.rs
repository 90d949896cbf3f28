//! Shared helpers: backends under test and a workspace per test.

mod docker;
mod isolation;
mod one_shot;
mod output;
mod process;
mod session;
mod ssh;

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
    if let Some(ssh) = ssh() {
        backends.push(ssh);
    }
    backends
}

/// One sshd on loopback for the whole test binary (sessions share it, as agents share a host).
static SSHD: std::sync::OnceLock<Result<slotbox_test_support::TestSshd, String>> =
    std::sync::OnceLock::new();

/// `backend` with `workspace` as its workspace: for ssh the "remote" host is this one, and its
/// workspace is the test's own directory (else every test would share the remote home).
pub(crate) fn at(backend: &Backend, workspace: &std::path::Path) -> Backend {
    match backend {
        Backend::Ssh(config) => Backend::Ssh(slotbox_exec::SshConfig {
            workspace: Some(workspace.to_str().unwrap().to_owned()),
            ..config.clone()
        }),
        other => other.clone(),
    }
}

/// The ssh backend against a real sshd on loopback (required in CI).
pub(crate) fn ssh() -> Option<Backend> {
    let server = SSHD.get_or_init(slotbox_test_support::TestSshd::start);
    let server = match server {
        Ok(server) => server,
        Err(reason) => {
            slotbox_test_support::require("sshd on loopback", Err(reason.clone()));
            return None;
        }
    };
    let mut config = slotbox_exec::SshConfig::new("127.0.0.1");
    config.port = Some(server.port);
    config.user = Some(server.user.clone());
    config.identity = Some(server.identity.clone());
    config.known_hosts = Some(server.known_hosts.clone());
    Some(Backend::Ssh(config))
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
    let backend = at(backend, workspace.path());
    let session = Session::start(SessionConfig::new(backend, workspace.path()))
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
