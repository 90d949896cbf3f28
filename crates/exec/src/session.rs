//! Sessions (state carried between calls) and one-shot calls (none), over any backend.
//!
//! A session is spawn-per-call: every command is a fresh bash, which makes timeouts and kills
//! simple and keeps one call's shell options (`set -e`) out of the next. What carries over is kept
//! in the session's private state directory:
//! - `snapshot`: exported variables, functions and aliases, first taken from a login shell when the
//!   session starts, then re-dumped after every command that finishes (see `SESSION_WRAPPER`);
//! - the working directory, which the wrapper writes after the command.
//!
//! The wrapper writes `snapshot.next`, whose last line carries the new cwd; this module publishes it
//! only when that line is there, renaming `snapshot.next` over `snapshot` (atomic), so a killed or
//! `exit`ing command leaves the previous state whole.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use slotbox_protocol::EXIT_INTERRUPTED;
use slotbox_protocol::EXIT_TIMEOUT;
use slotbox_protocol::ExecResult;

use crate::Error;
use crate::Result;
use crate::backend::Backend;
use crate::env::EnvPolicy;
use crate::limits::Interrupt;
use crate::limits::StallTimeout;
use crate::limits::Timeout;
use crate::output::OutputCap;
use crate::plan::CWD_LINE_PREFIX;
use crate::plan::HostLayout;
use crate::plan::PlanInput;
use crate::plan::SessionDirs;
use crate::plan::ShellInvocation;
use crate::plan::ShellScript;
use crate::spawn::Ending;
use crate::spawn::RunSpec;
use crate::spawn::Streams;

/// A working directory longer than this is not a path bash printed (`PATH_MAX` is 4096).
const MAX_CWD_BYTES: usize = 4096;

/// One command and its limits.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The command text, run by bash.
    pub command: String,
    /// Data piped to the command's stdin, which is then closed; `None` means stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Wall-clock limit; `None` means none.
    pub timeout: Option<Timeout>,
    /// No-output limit; `None` means none.
    pub stall_timeout: Option<StallTimeout>,
    /// Interrupt handle.
    pub interrupt: Option<Interrupt>,
    /// Output cap (per stream with `Streams::Separate`).
    pub max_output: OutputCap,
    /// Merged output (default) or stderr apart.
    pub streams: Streams,
    /// Receives the output (stdout, or the merged stream) as it arrives, for streaming to a
    /// client. A full channel pauses reading (backpressure); a closed one is ignored.
    pub stream: Option<tokio::sync::mpsc::Sender<String>>,
}

impl ExecRequest {
    /// `command` with the default timeout and cap, no stdin.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            stdin: None,
            timeout: Some(Timeout::DEFAULT),
            stall_timeout: None,
            interrupt: None,
            max_output: OutputCap::default(),
            streams: Streams::Merged,
            stream: None,
        }
    }

    /// Sets the wall-clock limit (`None`: no limit).
    pub fn timeout(mut self, timeout: Option<Timeout>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the no-output limit.
    pub fn stall_timeout(mut self, stall_timeout: StallTimeout) -> Self {
        self.stall_timeout = Some(stall_timeout);
        self
    }

    /// Pipes `data` to stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Watches `interrupt`.
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Captures stderr apart from stdout (`ExecResult::stderr`).
    pub fn separate_stderr(mut self) -> Self {
        self.streams = Streams::Separate;
        self
    }

    fn run_spec<'a>(
        &'a self,
        plan: &'a crate::plan::SpawnPlan,
        launcher: crate::spawn::Launcher<'a>,
    ) -> RunSpec<'a> {
        RunSpec {
            plan,
            stdin: self.stdin.clone(),
            timeout: self.timeout,
            stall_timeout: self.stall_timeout,
            interrupt: self.interrupt.as_ref(),
            cap: self.max_output,
            streams: self.streams,
            sink: self.stream.clone(),
            launcher,
        }
    }

    /// Sets the output cap.
    pub fn max_output(mut self, cap: OutputCap) -> Self {
        self.max_output = cap;
        self
    }
}

/// Where and how commands run.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The backend.
    pub backend: Backend,
    /// The workspace directory on the host; it must exist.
    pub workspace: PathBuf,
    /// The starting directory as the backend sees it; default: the workspace.
    pub cwd: Option<String>,
    /// The command environment.
    pub env: EnvPolicy,
    /// Where to create session state directories; default: the system temp directory.
    pub state_root: Option<PathBuf>,
}

impl SessionConfig {
    /// A config with the default environment policy.
    pub fn new(backend: Backend, workspace: impl Into<PathBuf>) -> Self {
        Self {
            backend,
            workspace: workspace.into(),
            cwd: None,
            env: EnvPolicy::default(),
            state_root: None,
        }
    }
}

/// Everything a call needs that does not change between calls.
#[derive(Debug)]
struct Prepared {
    backend: Backend,
    layout: Arc<HostLayout>,
    workspace: PathBuf,
    workspace_inside: String,
    env: BTreeMap<String, String>,
}

impl Prepared {
    async fn new(config: &SessionConfig) -> Result<Self> {
        if !config.workspace.is_dir() {
            return Err(Error::WorkspaceMissing {
                path: config.workspace.clone(),
            });
        }
        let layout = crate::probe::host_layout()?;
        let mut image_env = Vec::new();
        match &config.backend {
            Backend::Bubblewrap(bwrap) => {
                crate::probe::bubblewrap(bwrap, &layout, &config.workspace).await?;
            }
            Backend::Docker(docker) => {
                image_env = crate::backend::docker::probe(docker).await?;
            }
            Backend::Apptainer(apptainer) => {
                crate::backend::apptainer::probe(apptainer).await?;
            }
            Backend::Ssh(ssh) => {
                if !ssh.ssh.is_file() {
                    return Err(Error::SshUnavailable {
                        detail: format!(
                            "no ssh client at {} (apt-get install -y openssh-client)",
                            ssh.ssh.display()
                        ),
                    });
                }
            }
            Backend::Local => {}
        }
        let workspace_inside = config.backend.workspace_path(&config.workspace)?;
        let parent = crate::env::parent_env();
        let mut defaults = image_env;
        defaults.extend(config.backend.default_env(&config.workspace));
        let defaults: Vec<(&str, &str)> = defaults
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let env = config.env.resolve(
            parent
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
            &defaults,
        );
        Ok(Self {
            backend: config.backend.clone(),
            layout,
            workspace: config.workspace.clone(),
            workspace_inside,
            env,
        })
    }

    async fn run(
        &self,
        invocation: &ShellInvocation,
        session_dirs: Option<SessionDirs<'_>>,
        request: &ExecRequest,
    ) -> Result<crate::spawn::RunOutcome> {
        let plan = self.backend.plan(&PlanInput {
            layout: &self.layout,
            workspace: &self.workspace,
            session: session_dirs,
            env: &self.env,
            invocation,
        })?;
        crate::spawn::run(request.run_spec(&plan, crate::spawn::Launcher::Host)).await
    }
}

/// A shell session: cwd, exported variables, functions and aliases persist between calls.
#[derive(Debug)]
pub struct Session {
    /// The long-lived sandbox, when the backend has an agent (see `agent`). First, so it is
    /// killed before the directories it mounts are removed (fields drop in order).
    sandbox: Option<Sandbox>,
    prepared: Prepared,
    /// Snapshot and cwd files; removed with everything in it when the session is dropped.
    state: crate::fs::ScratchDir,
    /// The sandbox's /tmp (bubblewrap); removed when the session is dropped.
    tmp: crate::fs::ScratchDir,
    cwd: String,
    /// Whether the last remote call published a snapshot (ssh; local ones are files here).
    published: bool,
}

impl Session {
    /// Whether the session has a state snapshot to start commands from.
    fn has_snapshot(&self) -> bool {
        match self.sandbox {
            Some(Sandbox::Ssh(_)) => self.published,
            _ => self.state.path().join("snapshot").exists(),
        }
    }

    /// Starts a session: checks the backend (a sandbox that cannot be built is an error, never a
    /// silent downgrade) and takes the login-shell snapshot.
    pub async fn start(config: SessionConfig) -> Result<Self> {
        let prepared = Prepared::new(&config).await?;
        let state_root = config.state_root.clone().unwrap_or_else(default_state_root);
        let state =
            crate::fs::ScratchDir::create(&state_root, "slotbox-session-").map_err(Error::io(
                format!("creating a session directory in {}", state_root.display()),
            ))?;
        // The session's /tmp holds whatever commands put there, so it lives on disk, not in RAM.
        let tmp = crate::fs::ScratchDir::create(&std::env::temp_dir(), "slotbox-tmp-")
            .map_err(Error::io("creating the session's /tmp"))?;
        let cwd = config
            .cwd
            .clone()
            .unwrap_or_else(|| prepared.workspace_inside.clone());
        let sandbox = match &prepared.backend {
            Backend::Docker(docker) => {
                let (channel, container) =
                    crate::backend::docker::start(docker, &prepared.workspace, state.path())
                        .await?;
                Some(Sandbox::Container {
                    channel,
                    _container: container,
                })
            }
            Backend::Bubblewrap(bwrap) => match &bwrap.agent {
                Some(agent) => {
                    let plan = crate::backend::bubblewrap::plan_agent_sandbox(
                        bwrap,
                        agent,
                        &prepared.layout,
                        &prepared.workspace,
                        SessionDirs {
                            state: state.path(),
                            tmp: tmp.path(),
                        },
                        &prepared.env,
                    )?;
                    Some(Sandbox::Bubblewrap(
                        crate::agent::SandboxHost::start(&plan, bwrap.limits.as_ref()).await?,
                    ))
                }
                None => None,
            },
            Backend::Ssh(ssh) => {
                let connection = crate::backend::ssh::Connection::open(ssh, state.path()).await?;
                Some(Sandbox::Ssh(connection))
            }
            Backend::Local | Backend::Apptainer(_) => None,
        };
        let mut prepared = prepared;
        let mut cwd = cwd;
        if let Some(Sandbox::Ssh(connection)) = &sandbox {
            // The remote side is known now: its workspace (the default cwd) and home.
            prepared.workspace_inside = connection.workspace.clone();
            if config.cwd.is_none() {
                cwd = connection.workspace.clone();
            }
            prepared
                .env
                .entry("HOME".to_owned())
                .or_insert_with(|| connection.home.clone());
        }
        let mut session = Self {
            prepared,
            state,
            tmp,
            sandbox,
            cwd,
            published: false,
        };
        session.take_login_snapshot().await?;
        Ok(session)
    }

    /// The working directory the next command starts in, as the backend sees it.
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.prepared.backend
    }

    /// Runs one command.
    pub async fn exec(&mut self, request: &ExecRequest) -> Result<ExecResult> {
        self.exec_shell(request, false).await
    }

    /// Runs a command with none of the session's state: a fresh `bash -c` in the workspace, as
    /// `exec_once` would, but in the session's long-lived sandbox when it has one (much cheaper
    /// than a new sandbox). Changes nothing of the session.
    pub async fn exec_stateless(&mut self, request: &ExecRequest) -> Result<ExecResult> {
        let cwd = self.prepared.workspace_inside.clone();
        self.exec_stateless_in(cwd, request).await
    }

    /// `exec_stateless` starting in `cwd` (as the backend sees it).
    async fn exec_stateless_in(
        &mut self,
        cwd: String,
        request: &ExecRequest,
    ) -> Result<ExecResult> {
        let invocation = ShellInvocation {
            login: false,
            script: ShellScript::OneShot {
                cwd: cwd.clone(),
                command: request.command.clone(),
            },
        };
        // A one-shot call outside a long-lived sandbox gets a fresh one (no session /tmp).
        let outcome = self.run_invocation(&invocation, None, request).await?;
        Ok(result_of(outcome, cwd))
    }

    /// Runs an invocation: through the agent of the session's long-lived sandbox when there is
    /// one, else planned and spawned on the host.
    async fn run_invocation(
        &self,
        invocation: &ShellInvocation,
        session_dirs: Option<SessionDirs<'_>>,
        request: &ExecRequest,
    ) -> Result<crate::spawn::RunOutcome> {
        match (&self.sandbox, &self.prepared.backend) {
            (Some(Sandbox::Bubblewrap(host)), Backend::Bubblewrap(bwrap)) => {
                let plan = crate::backend::bubblewrap::plan_inside(
                    bwrap,
                    &self.prepared.layout,
                    invocation,
                    &self.prepared.env,
                );
                crate::spawn::run(
                    request.run_spec(&plan, crate::spawn::Launcher::Agent(&host.channel)),
                )
                .await
            }
            (Some(Sandbox::Ssh(connection)), Backend::Ssh(ssh)) => {
                if !connection.alive() {
                    // Without its master, ssh would quietly open a new connection per call.
                    return Err(Error::SandboxGone);
                }
                let merged = request.streams == crate::spawn::Streams::Merged;
                let call = connection.next_call();
                let plan = crate::backend::ssh::plan(
                    ssh,
                    &connection.control,
                    invocation,
                    &self.prepared.env,
                    &connection.remote_state,
                    merged,
                    call,
                );
                let remote = connection.remote_kill(call);
                // ssh's stderr channel carries the cwd report (and ssh's own errors): always
                // apart here, sorted out by `ssh_outcome`.
                let mut spec = request.run_spec(&plan, crate::spawn::Launcher::Remote(&remote));
                spec.streams = crate::spawn::Streams::Separate;
                let outcome = crate::spawn::run(spec).await?;
                Ok(ssh_outcome(outcome, merged, request.max_output))
            }
            (Some(Sandbox::Container { channel, .. }), Backend::Docker(docker)) => {
                let plan =
                    crate::backend::docker::plan_inside(docker, invocation, &self.prepared.env);
                crate::spawn::run(request.run_spec(&plan, crate::spawn::Launcher::Agent(channel)))
                    .await
            }
            _ => self.prepared.run(invocation, session_dirs, request).await,
        }
    }

    async fn take_login_snapshot(&mut self) -> Result<()> {
        let bootstrap =
            ExecRequest::new(":").timeout(Some(Timeout::new(std::time::Duration::from_secs(30))));
        let login = self.exec_shell(&bootstrap, true).await?;
        if login.exit_code == 0 && self.has_snapshot() {
            return Ok(());
        }
        // A broken profile must not make the session unusable: fall back to a plain shell's
        // snapshot (as hermes does), and fail only if even that does not work.
        tracing::warn!(
            exit_code = login.exit_code,
            output = %login.output,
            "login shell failed; taking the session snapshot without the profile"
        );
        let plain = self.exec_shell(&bootstrap, false).await?;
        if plain.exit_code == 0 && self.has_snapshot() {
            return Ok(());
        }
        Err(Error::SessionStart {
            detail: format!("exit code {}: {}", plain.exit_code, plain.output.trim()),
        })
    }

    async fn exec_shell(&mut self, request: &ExecRequest, login: bool) -> Result<ExecResult> {
        if matches!(self.sandbox, Some(Sandbox::Ssh(_))) {
            return self.exec_remote_shell(request, login).await;
        }
        let dir = self.state.path();
        // A leftover from a call that was killed mid-dump must not be taken for this call's.
        remove_if_present(&dir.join("snapshot.next"))?;
        let invocation = ShellInvocation {
            login,
            script: ShellScript::Session {
                cwd: self.cwd.clone(),
                command: request.command.clone(),
            },
        };
        let session_dirs = SessionDirs {
            state: dir,
            tmp: self.tmp.path(),
        };
        let outcome = self
            .run_invocation(&invocation, Some(session_dirs), request)
            .await?;
        if let Some(cwd) = read_new_cwd(&dir.join("snapshot.next"))? {
            // The directory is writable from inside a sandbox, so a command can sabotage this
            // rename; then the previous state stays whole.
            match std::fs::rename(dir.join("snapshot.next"), dir.join("snapshot")) {
                Ok(()) => self.cwd = cwd,
                Err(error) => tracing::warn!(%error, "session snapshot not published"),
            }
        }
        Ok(result_of(outcome, self.cwd.clone()))
    }
}

impl Session {
    /// A session call on the remote host: the remote side publishes the snapshot and reports
    /// the new cwd (see `backend::ssh`).
    async fn exec_remote_shell(
        &mut self,
        request: &ExecRequest,
        login: bool,
    ) -> Result<ExecResult> {
        let invocation = ShellInvocation {
            login,
            script: ShellScript::Session {
                cwd: self.cwd.clone(),
                command: request.command.clone(),
            },
        };
        let mut outcome = self.run_invocation(&invocation, None, request).await?;
        self.published = false;
        if let Some(cwd) = outcome.reported_cwd.take() {
            self.cwd = cwd;
            self.published = true;
        }
        Ok(result_of(outcome, self.cwd.clone()))
    }
}

/// Sorts an ssh call's stderr channel: the cwd report (last line) is taken out; the rest (ssh's
/// own errors, or the command's stderr when it was asked for apart) goes back to the output or
/// stays stderr.
fn ssh_outcome(
    mut outcome: crate::spawn::RunOutcome,
    merged: bool,
    cap: OutputCap,
) -> crate::spawn::RunOutcome {
    let Some(stderr) = outcome.stderr.take() else {
        return outcome;
    };
    let mut text = stderr.render("").text;
    // The remote account's start-up output comes before the start line: not the command's.
    if let Some(at) = text.find(crate::backend::ssh::START_REPORT) {
        text.drain(..at + crate::backend::ssh::START_REPORT.len());
    }
    // The reports are the last lines: the exit, before it the cwd (sessions).
    for prefix in [crate::spawn::REMOTE_EXIT, crate::backend::ssh::CWD_REPORT] {
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let start = body.rfind('\n').map_or(0, |at| at + 1);
        if let Some(value) = body[start..].strip_prefix(prefix) {
            if prefix == crate::backend::ssh::CWD_REPORT && value.starts_with('/') {
                outcome.reported_cwd = Some(value.to_owned());
            }
            text.truncate(start);
        }
    }
    if merged {
        // Only ssh's own messages are left there (the command's stderr was merged remotely).
        outcome.capture.push(&text);
    } else {
        let mut capture = crate::output::BoundedCapture::new(cap);
        capture.push(&text);
        outcome.stderr = Some(capture);
    }
    outcome
}

/// Where session state directories go by default: a RAM-backed directory when there is one, since
/// the wrapper writes two small files per call and on a journaled disk (ext4 with `discard`) that
/// alone measured about 1 ms a call, as much as starting bash; otherwise the temp directory.
fn default_state_root() -> PathBuf {
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| is_writable_dir(dir))
        .unwrap_or_else(std::env::temp_dir)
}

fn is_writable_dir(dir: &Path) -> bool {
    dir.is_absolute()
        && dir.is_dir()
        && nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_ok()
}

/// A long-lived sandbox whose agent starts the session's commands.
#[derive(Debug)]
enum Sandbox {
    /// A bubblewrap sandbox (a host process tree).
    Bubblewrap(crate::agent::SandboxHost),
    /// A container; the channel first, so the agent sees the host go before the container is
    /// removed.
    Container {
        channel: crate::agent::Channel,
        _container: crate::backend::docker::Container,
    },
    /// An ssh connection (no agent: each call is an ssh client process).
    Ssh(crate::backend::ssh::Connection),
}

/// Runs one command with no state before or after it.
pub async fn exec_once(config: &SessionConfig, request: &ExecRequest) -> Result<ExecResult> {
    if let Backend::Docker(_) | Backend::Ssh(_) = config.backend {
        // A container (or connection) exists only with a session: one for this command alone.
        let mut session = Session::start(config.clone()).await?;
        let cwd = config
            .cwd
            .clone()
            .unwrap_or_else(|| session.prepared.workspace_inside.clone());
        return session.exec_stateless_in(cwd, request).await;
    }
    let prepared = Prepared::new(config).await?;
    let cwd = config
        .cwd
        .clone()
        .unwrap_or_else(|| prepared.workspace_inside.clone());
    let invocation = ShellInvocation {
        login: false,
        script: ShellScript::OneShot {
            cwd: cwd.clone(),
            command: request.command.clone(),
        },
    };
    let outcome = prepared.run(&invocation, None, request).await?;
    Ok(result_of(outcome, cwd))
}

fn result_of(outcome: crate::spawn::RunOutcome, cwd: String) -> ExecResult {
    let (exit_code, notice) = match outcome.ending {
        Ending::Exited(code) => (code, None),
        Ending::TimedOut(timeout) => (
            EXIT_TIMEOUT,
            Some(format!("[Command timed out after {timeout}s]")),
        ),
        Ending::Stalled(stall) => (
            EXIT_TIMEOUT,
            Some(format!("[Command produced no output for {stall}s]")),
        ),
        Ending::Interrupted => (EXIT_INTERRUPTED, Some("[Command interrupted]".to_owned())),
    };
    // hermes' format: the notice on its own line, without a leading newline when nothing was printed.
    let suffix = match notice {
        Some(notice) if outcome.capture.is_empty() => notice,
        Some(notice) => format!("\n{notice}"),
        None => String::new(),
    };
    let rendered = outcome.capture.render(&suffix);
    let stderr = outcome.stderr.map(|capture| capture.render(""));
    let stderr_truncated = stderr.as_ref().is_some_and(|stderr| stderr.truncated);
    ExecResult {
        exit_code,
        output: rendered.text,
        stderr: stderr.map(|stderr| stderr.text),
        timed_out: matches!(outcome.ending, Ending::TimedOut(_) | Ending::Stalled(_)),
        interrupted: matches!(outcome.ending, Ending::Interrupted),
        truncated: rendered.truncated || stderr_truncated,
        cwd,
        duration_ms: u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Reads the cwd from the last line of a snapshot the wrapper wrote; `None` when the dump is not
/// whole. The file is in a directory a sandboxed command can write to, so it is opened without
/// following symlinks (a planted link must not make slotbox read a host file) and only its tail
/// is read.
fn read_new_cwd(path: &Path) -> Result<Option<String>> {
    use std::io::Seek;
    use std::io::SeekFrom;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: a symlink was planted. Treat like "no new state": keep the previous one.
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(error) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: error,
            });
        }
    };
    let Ok(meta) = file.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let tail_len = (MAX_CWD_BYTES + CWD_LINE_PREFIX.len() + 1) as u64;
    if file
        .seek(SeekFrom::Start(meta.len().saturating_sub(tail_len)))
        .is_err()
    {
        return Ok(None);
    }
    let mut tail = Vec::with_capacity(tail_len as usize);
    if file.take(tail_len).read_to_end(&mut tail).is_err() {
        return Ok(None);
    }
    let tail = String::from_utf8_lossy(&tail);
    // The last occurrence: a cwd (or an exported value) may itself contain the prefix.
    let Some(start) = tail.rfind(CWD_LINE_PREFIX) else {
        return Ok(None);
    };
    let Some(cwd) = tail[start + CWD_LINE_PREFIX.len()..].strip_suffix('\n') else {
        return Ok(None);
    };
    if !cwd.starts_with('/') || cwd.len() > MAX_CWD_BYTES {
        return Ok(None);
    }
    Ok(Some(cwd.to_owned()))
}

fn remove_if_present(path: &Path) -> Result<()> {
    // A command can put a directory where the wrapper writes its file: remove that too.
    if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
        return crate::fs::remove_tree(path).map_err(|source| Error::Io {
            context: format!("removing {}", path.display()),
            source,
        });
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::Io {
            context: format!("removing {}", path.display()),
            source: error,
        }),
    }
}
