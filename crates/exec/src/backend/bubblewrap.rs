//! The bubblewrap backend: every call runs in a fresh `bwrap` sandbox.
//!
//! Layout inside the sandbox (root is bwrap's own tmpfs, remounted read-only):
//! - `/usr`, `/etc` (credential files masked), `/opt` and the `/bin` `/lib*` entries: read-only;
//! - the workspace at `workspace_mount` (default `/workspace`): read-write; nothing else of the host
//!   is there (no home, no other workspace, no `/run` sockets);
//! - `/tmp`: private. In a session it is a directory of the session's own, so files there persist
//!   between calls of the session and vanish with it; one-shot calls get a fresh tmpfs;
//! - the session's state directory at `/run/slotbox` (the wrapper's snapshot and cwd files);
//! - new user, PID, IPC, UTS (and cgroup, where supported) namespaces; a new network namespace
//!   (loopback only) unless the network is allowed; `--die-with-parent` so a dead slotbox leaves no
//!   sandbox behind.
//!
//! The process tree and how it is killed: the plan runs `setsid bwrap …`, so bwrap leads a new
//! session (no controlling terminal: a command cannot push keystrokes into slotbox's terminal
//! with TIOCSTI) and a process group whose id is its pid. bwrap's own `--new-session` is *not*
//! used: with it, bwrap's namespace init leaves that group, and killing the group would rely on
//! `--die-with-parent` alone, which loses a race when bwrap is killed during its setup (measured:
//! orphaned sandboxes under load). Without it, `killpg` reaches the namespace init directly, and
//! its death ends every process in the namespace, including ones that called `setsid`.
//!
//! With `--unshare-pid` the command's shell is the child of the namespace's init: when it exits the
//! namespace ends and every process it left behind is killed, so a background job cannot outlive
//! its call.

use std::path::PathBuf;

use crate::Error;
use crate::Result;
use crate::plan::PlanInput;
use crate::plan::ProcessGroup;
use crate::plan::RootEntry;
use crate::plan::ShellScript;
use crate::plan::SpawnPlan;
use crate::plan::bash_args;
use crate::plan::utf8;

/// Where the session's state directory is mounted inside the sandbox.
pub(crate) const STATE_MOUNT: &str = "/run/slotbox";

/// Whether a sandbox may reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A private network namespace with only loopback.
    Off,
    /// The host's network.
    On,
}

/// How to run bubblewrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BubblewrapConfig {
    /// The `bwrap` binary.
    pub bwrap: PathBuf,
    /// Network access.
    pub network: Network,
    /// Where the workspace appears inside the sandbox.
    pub workspace_mount: String,
    /// With an agent, a session keeps one sandbox for its whole life and starts each command in
    /// it through the agent (fast; background jobs live on between calls). Without, every call
    /// is a fresh sandbox.
    pub agent: Option<AgentCommand>,
    /// Resource limits for long-lived sandboxes (with an agent), through cgroups.
    pub limits: Option<SandboxLimits>,
}

/// cgroup limits and where to apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// The host's cgroup layout (`CgroupLayout::detect`).
    pub layout: crate::cgroup::CgroupLayout,
    /// The limits.
    pub limits: crate::cgroup::CgroupLimits,
}

/// How to start the sandbox agent: a binary that calls `slotbox_exec::agent::run_main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// The binary on the host (bound read-only into the sandbox).
    pub program: PathBuf,
    /// Its arguments (e.g. the hidden subcommand `__sandbox-agent`).
    pub args: Vec<String>,
}

impl Default for BubblewrapConfig {
    fn default() -> Self {
        Self {
            bwrap: super::find_program("bwrap", "/usr/bin/bwrap"),
            network: Network::Off,
            workspace_mount: "/workspace".to_owned(),
            agent: None,
            limits: None,
        }
    }
}

/// The sandbox's argv up to (not including) `--`, and where the session state is mounted.
/// `extra` runs just before the root is made read-only (the agent's bind goes there).
fn sandbox_args(
    config: &BubblewrapConfig,
    layout: &crate::plan::HostLayout,
    workspace: &std::path::Path,
    session: Option<crate::plan::SessionDirs<'_>>,
    chdir: &str,
    extra: &[&str],
) -> Result<(Vec<String>, Option<&'static str>)> {
    let bwrap = utf8(&config.bwrap)?;
    let mut args: Vec<String> = vec![bwrap.to_owned()];
    let mut push = |items: &[&str]| args.extend(items.iter().map(|item| (*item).to_owned()));

    push(&["--die-with-parent"]);
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    // bwrap started by root keeps every capability inside the sandbox unless told otherwise:
    // CAP_SYS_ADMIN there could remount the read-only binds writable and write to the host.
    push(&["--cap-drop", "ALL"]);
    if config.network == Network::Off {
        push(&["--unshare-net"]);
    }
    push(&["--hostname", "slotbox"]);

    push(&["--ro-bind", "/usr", "/usr"]);
    for entry in &layout.root_entries {
        match entry {
            RootEntry::Symlink { path, target } => push(&["--symlink", target, path]),
            RootEntry::Dir { path } => push(&["--ro-bind", path, path]),
        }
    }
    push(&["--ro-bind", "/etc", "/etc"]);
    for file in &layout.masked_files {
        push(&["--ro-bind", "/dev/null", file]);
    }
    for dir in &layout.extra_system_dirs {
        push(&["--ro-bind", dir, dir]);
    }
    push(&["--proc", "/proc", "--dev", "/dev"]);

    push(&["--bind", utf8(workspace)?, &config.workspace_mount]);

    push(&["--tmpfs", "/run"]);
    let state_dir = match session {
        Some(dirs) => {
            push(&["--bind", utf8(dirs.tmp)?, "/tmp"]);
            push(&["--bind", utf8(dirs.state)?, STATE_MOUNT]);
            Some(STATE_MOUNT)
        }
        None => {
            push(&["--tmpfs", "/tmp"]);
            None
        }
    };
    push(&["--dir", "/var", "--symlink", "/tmp", "/var/tmp"]);
    push(extra);
    push(&["--remount-ro", "/"]);
    push(&["--chdir", chdir]);
    Ok((args, state_dir))
}

pub(crate) fn plan(config: &BubblewrapConfig, input: &PlanInput<'_>) -> Result<SpawnPlan> {
    let setsid = input.layout.setsid.as_deref().ok_or(Error::SetsidMissing)?;
    let chdir = match &input.invocation.script {
        // The wrapper enters the tracked cwd itself (with the deleted-directory fallback).
        ShellScript::Session { .. } => config.workspace_mount.as_str(),
        ShellScript::OneShot { cwd, .. } => cwd.as_str(),
    };
    let (mut args, state_dir) = sandbox_args(
        config,
        input.layout,
        input.workspace,
        input.session,
        chdir,
        &[],
    )?;
    args.push("--".to_owned());
    args.push(input.layout.bash.clone());
    args.extend(bash_args(input.invocation, state_dir));
    Ok(SpawnPlan {
        program: PathBuf::from(setsid),
        args,
        env: input.env.clone(),
        cwd: PathBuf::from("/"),
        group: ProcessGroup::NewSession,
    })
}

/// Where the agent binary appears inside a long-lived sandbox.
pub(crate) const AGENT_MOUNT: &str = "/run/slotbox-agent";

/// The long-lived sandbox of a session: the same sandbox as `plan`, running the agent (read-only
/// bind of its binary) instead of one command. Its stdin will be the control socket.
pub(crate) fn plan_agent_sandbox(
    config: &BubblewrapConfig,
    agent: &AgentCommand,
    layout: &crate::plan::HostLayout,
    workspace: &std::path::Path,
    session: crate::plan::SessionDirs<'_>,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<SpawnPlan> {
    let setsid = layout.setsid.as_deref().ok_or(Error::SetsidMissing)?;
    let agent_path = utf8(&agent.program)?;
    let (mut args, _) = sandbox_args(
        config,
        layout,
        workspace,
        Some(session),
        "/",
        &["--ro-bind", agent_path, AGENT_MOUNT],
    )?;
    args.push("--".to_owned());
    args.push(AGENT_MOUNT.to_owned());
    args.extend(agent.args.iter().cloned());
    Ok(SpawnPlan {
        program: PathBuf::from(setsid),
        args,
        env: env.clone(),
        cwd: PathBuf::from("/"),
        group: ProcessGroup::NewSession,
    })
}

/// A session call as the agent runs it inside the long-lived sandbox.
pub(crate) fn plan_inside(
    config: &BubblewrapConfig,
    layout: &crate::plan::HostLayout,
    invocation: &crate::plan::ShellInvocation,
    env: &std::collections::BTreeMap<String, String>,
) -> SpawnPlan {
    SpawnPlan {
        program: PathBuf::from(&layout.bash),
        args: bash_args(invocation, Some(STATE_MOUNT)),
        env: env.clone(),
        cwd: PathBuf::from(&config.workspace_mount),
        group: ProcessGroup::New,
    }
}
