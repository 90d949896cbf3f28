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
}

impl Default for BubblewrapConfig {
    fn default() -> Self {
        Self {
            bwrap: super::find_program("bwrap", "/usr/bin/bwrap"),
            network: Network::Off,
            workspace_mount: "/workspace".to_owned(),
        }
    }
}

pub(crate) fn plan(config: &BubblewrapConfig, input: &PlanInput<'_>) -> Result<SpawnPlan> {
    let setsid = input.layout.setsid.as_deref().ok_or(Error::SetsidMissing)?;
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
    if config.network == Network::Off {
        push(&["--unshare-net"]);
    }
    push(&["--hostname", "slotbox"]);

    push(&["--ro-bind", "/usr", "/usr"]);
    for entry in &input.layout.root_entries {
        match entry {
            RootEntry::Symlink { path, target } => push(&["--symlink", target, path]),
            RootEntry::Dir { path } => push(&["--ro-bind", path, path]),
        }
    }
    push(&["--ro-bind", "/etc", "/etc"]);
    for file in &input.layout.masked_files {
        push(&["--ro-bind", "/dev/null", file]);
    }
    for dir in &input.layout.extra_system_dirs {
        push(&["--ro-bind", dir, dir]);
    }
    push(&["--proc", "/proc", "--dev", "/dev"]);

    let workspace = utf8(input.workspace)?;
    push(&["--bind", workspace, &config.workspace_mount]);

    push(&["--tmpfs", "/run"]);
    let state_dir = match input.session {
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
    push(&["--remount-ro", "/"]);

    let chdir = match &input.invocation.script {
        // The wrapper enters the tracked cwd itself (with the deleted-directory fallback).
        ShellScript::Session { .. } => config.workspace_mount.as_str(),
        ShellScript::OneShot { cwd, .. } => cwd.as_str(),
    };
    push(&["--chdir", chdir]);
    push(&["--", &input.layout.bash]);
    args.extend(bash_args(input.invocation, state_dir));

    Ok(SpawnPlan {
        program: PathBuf::from(setsid),
        args,
        env: input.env.clone(),
        cwd: PathBuf::from("/"),
        group: ProcessGroup::NewSession,
    })
}
