//! The ssh backend: commands on another machine over one persistent OpenSSH connection
//! (ControlMaster), with the same session contract as the other backends.
//!
//! A session starts a master connection (`ssh -M -N`, host-key checking on: `BatchMode`,
//! `StrictHostKeyChecking=yes`) and makes a private state directory on the remote host. Each
//! call is one `ssh -S <control socket>` through that connection, running a remote shell line
//! that:
//! 1. records its pid (it leads the command's process group there), so a timeout or interrupt
//!    can kill the remote group: killing the local ssh client alone would leave the command
//!    running on the remote host;
//! 2. runs the session wrapper (the same `SESSION_WRAPPER` as everywhere) with a clean
//!    environment, stdout and stderr merged in order on the remote side;
//! 3. publishes the new snapshot if the wrapper wrote it whole, and reports the cwd as the last
//!    line on ssh's stderr channel, which the session reads apart from the output.
//!
//! So a call is one round trip on an open connection. Everything that builds command lines here
//! is pure (snapshot-tested); the shell quoting is `quote`.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use crate::Error;
use crate::Result;
use crate::plan::ProcessGroup;
use crate::plan::ShellInvocation;
use crate::plan::ShellScript;
use crate::plan::SpawnPlan;
use crate::plan::bash_args;

/// The prefix of the line the remote side prints on stderr with the session's new cwd.
pub(crate) const CWD_REPORT: &str = "# slotbox-cwd ";
/// The line the remote side prints on stderr first: what came before it is the remote
/// account's shell start-up talking (e.g. `~/.bashrc`, which sshd's bash reads), not the command.
pub(crate) const START_REPORT: &str = "# slotbox-start\n";

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// The OpenSSH client.
    pub ssh: PathBuf,
    /// Host name or address.
    pub host: String,
    /// Remote user (default: ssh's own default).
    pub user: Option<String>,
    /// Port (default: 22 or ssh's configuration).
    pub port: Option<u16>,
    /// Private key to log in with (no passwords: `BatchMode`).
    pub identity: Option<PathBuf>,
    /// Known-hosts file holding the host's key (default: ssh's own); host keys are always
    /// checked.
    pub known_hosts: Option<PathBuf>,
    /// The remote workspace (absolute; created if missing); default: the remote user's home.
    pub workspace: Option<String>,
}

impl SshConfig {
    /// `host` with the `ssh` on `PATH` and defaults for everything else.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            ssh: crate::backend::find_program("ssh", "/usr/bin/ssh"),
            host: host.into(),
            user: None,
            port: None,
            identity: None,
            known_hosts: None,
            workspace: None,
        }
    }

    /// `user@host` or `host`.
    fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// Options common to the master and every call.
    fn options(&self) -> Vec<String> {
        let mut options = vec![
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "-o".to_owned(),
            "LogLevel=ERROR".to_owned(),
            "-o".to_owned(),
            "ConnectTimeout=10".to_owned(),
        ];
        if let Some(port) = self.port {
            options.extend(["-p".to_owned(), port.to_string()]);
        }
        if let Some(identity) = &self.identity {
            options.extend([
                "-i".to_owned(),
                identity.to_string_lossy().into_owned(),
                "-o".to_owned(),
                "IdentitiesOnly=yes".to_owned(),
            ]);
        }
        if let Some(known_hosts) = &self.known_hosts {
            options.extend([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", known_hosts.to_string_lossy()),
            ]);
        }
        options
    }
}

/// Quotes `text` for a POSIX shell: one word, nothing expanded.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The argv of `ssh` running `remote` (a shell line) through the control socket.
pub(crate) fn call_args(config: &SshConfig, control: &Path, remote: &str) -> Vec<String> {
    let mut args = vec![
        "-S".to_owned(),
        control.to_string_lossy().into_owned(),
        "-o".to_owned(),
        "ControlMaster=no".to_owned(),
    ];
    args.extend(config.options());
    args.push(config.destination());
    args.push("--".to_owned());
    args.push(remote.to_owned());
    args
}

/// The argv of the master connection.
pub(crate) fn master_args(config: &SshConfig, control: &Path) -> Vec<String> {
    let mut args = vec![
        "-M".to_owned(),
        "-N".to_owned(),
        "-S".to_owned(),
        control.to_string_lossy().into_owned(),
        "-o".to_owned(),
        "ControlPersist=no".to_owned(),
        "-o".to_owned(),
        "ServerAliveInterval=15".to_owned(),
    ];
    args.extend(config.options());
    args.push(config.destination());
    args
}

/// The remote shell line of one call: pid file, the wrapper (or a one-shot command) in a clean
/// environment, then (sessions) publish the snapshot and report the cwd on stderr.
pub(crate) fn remote_line(
    invocation: &ShellInvocation,
    env: &BTreeMap<String, String>,
    remote_state: &str,
    merge_stderr: bool,
    call: u64,
) -> String {
    let state = quote(remote_state);
    // Its own pid file per call (a late kill must never hit a later call's group), and a kill
    // that arrived before the pid was written cancels the call here.
    let mut line = format!(
        "printf '{}' >&2; echo $$ >{state}/pid.{call}; if [ -e {state}/cancel.{call} ]; then exit 137; fi; ",
        START_REPORT.replace('\n', "\\n")
    );
    line.push_str("env -i");
    for (name, value) in env {
        line.push(' ');
        line.push_str(&quote(&format!("{name}={value}")));
    }
    line.push_str(" /bin/bash");
    let state_arg = match invocation.script {
        ShellScript::Session { .. } => Some(remote_state),
        ShellScript::OneShot { .. } => None,
    };
    for arg in bash_args(invocation, state_arg) {
        line.push(' ');
        line.push_str(&quote(&arg));
    }
    if let ShellScript::OneShot { cwd, .. } = &invocation.script {
        // A one-shot command starts in its directory (the wrapper does this for sessions).
        line = format!("cd {} || exit 126; {line}", quote(cwd));
    }
    if merge_stderr {
        line.push_str(" 2>&1");
    }
    line.push_str(&format!("; s=$?; rm -f {state}/pid.{call}"));
    if let ShellScript::Session { .. } = invocation.script {
        // Publish only a whole dump (its last line is the cwd), then report that cwd.
        line.push_str(&format!(
            "; n={state}/snapshot.next; c=$(tail -n 1 \"$n\" 2>/dev/null); \
             case $c in '{CWD_REPORT}'/*) mv -f \"$n\" {state}/snapshot && printf '%s\\n' \"$c\" >&2 ;; esac; \
             rm -f \"$n\""
        ));
    }
    // Last on stderr: the end of the command, for a client that background jobs keep waiting.
    line.push_str(&format!(
        "; printf '{}%s\\n' \"$s\" >&2; exit $s",
        crate::spawn::REMOTE_EXIT
    ));
    line
}

/// The plan of one call.
pub(crate) fn plan(
    config: &SshConfig,
    control: &Path,
    invocation: &ShellInvocation,
    env: &BTreeMap<String, String>,
    remote_state: &str,
    merge_stderr: bool,
    call: u64,
) -> SpawnPlan {
    SpawnPlan {
        program: config.ssh.clone(),
        args: call_args(
            config,
            control,
            &remote_line(invocation, env, remote_state, merge_stderr, call),
        ),
        // ssh's own environment: nothing of slotbox's (no agent socket, no secrets).
        env: BTreeMap::from([("PATH".to_owned(), crate::env::DEFAULT_PATH.to_owned())]),
        cwd: PathBuf::from("/"),
        group: ProcessGroup::New,
    }
}

/// The shell line that kills call `call`'s remote process group (or cancels the call if it has
/// not written its pid yet). `kill -SIG -PGID`, not `kill -SIG -- -PGID`: dash's `kill` (the
/// login shell of many accounts) rejects `--`.
pub(crate) fn kill_line(remote_state: &str, call: u64, signal: &str) -> String {
    let state = quote(remote_state);
    format!(
        ": >{state}/cancel.{call}; p=$(cat {state}/pid.{call} 2>/dev/null) && kill -{signal} -\"$p\" 2>/dev/null; true"
    )
}

/// An open connection: the master process and the remote session directory.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) config: SshConfig,
    /// The control socket (in the session's local state directory).
    pub(crate) control: PathBuf,
    /// The remote state directory.
    pub(crate) remote_state: String,
    /// The remote workspace.
    pub(crate) workspace: String,
    /// The remote user's home.
    pub(crate) home: String,
    calls: std::sync::atomic::AtomicU64,
    /// `None` only while dropping.
    master: std::sync::Mutex<Option<tokio::process::Child>>,
}

impl Connection {
    /// Opens the master connection and prepares the remote side.
    pub(crate) async fn open(config: &SshConfig, local_state: &Path) -> Result<Self> {
        let control = local_state.join("ssh-control");
        let mut master = tokio::process::Command::new(&config.ssh)
            .args(master_args(config, &control))
            .env_clear()
            .env("PATH", crate::env::DEFAULT_PATH)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| unavailable(format!("starting {}: {error}", config.ssh.display())))?;
        // Ready when the control socket answers (`ssh -O check`); a master that exits first
        // says why on stderr (host key, authentication).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            let check = tokio::process::Command::new(&config.ssh)
                .args(["-S", &control.to_string_lossy(), "-O", "check"])
                .args(config.options())
                .arg(config.destination())
                .env_clear()
                .env("PATH", crate::env::DEFAULT_PATH)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            if matches!(check, Ok(status) if status.success()) {
                break;
            }
            if let Ok(Some(status)) = master.try_wait() {
                let mut said = String::new();
                if let Some(mut stderr) = master.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut said).await;
                }
                return Err(unavailable(format!(
                    "ssh to {} failed ({status}): {}",
                    config.destination(),
                    said.trim()
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "ssh to {} did not connect within 30 s",
                    config.destination()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
        let mut connection = Self {
            config: config.clone(),
            control,
            remote_state: String::new(),
            workspace: String::new(),
            home: String::new(),
            calls: std::sync::atomic::AtomicU64::new(0),
            master: std::sync::Mutex::new(Some(master)),
        };
        let workspace = match &config.workspace {
            Some(dir) => format!("mkdir -p {0} && cd {0} && pwd -P", quote(dir)),
            None => "cd && pwd -P".to_owned(),
        };
        let prepared = connection
            .run(&format!(
                "umask 077 && d=$(mktemp -d /tmp/slotbox-session-XXXXXXXX) && echo \"$d\" && (cd && pwd -P) && {workspace}"
            ))
            .await?;
        let mut lines = prepared.lines();
        match (lines.next(), lines.next(), lines.next()) {
            (Some(state), Some(home), Some(workspace))
                if [state, home, workspace]
                    .iter()
                    .all(|path| path.starts_with('/')) =>
            {
                connection.remote_state = state.to_owned();
                connection.home = home.to_owned();
                connection.workspace = workspace.to_owned();
                Ok(connection)
            }
            _ => Err(unavailable(format!(
                "preparing the remote session on {} failed: {prepared:?}",
                config.destination()
            ))),
        }
    }

    /// Runs a short control line on the remote host; its stdout.
    pub(crate) async fn run(&self, line: &str) -> Result<String> {
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::process::Command::new(&self.config.ssh)
                .args(call_args(&self.config, &self.control, line))
                .env_clear()
                .env("PATH", crate::env::DEFAULT_PATH)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| {
            unavailable(
                "a control command on the remote host did not finish within 30 s (a stuck host, \
                 or a remote shell start-up such as ~/.bashrc that blocks)"
                    .to_owned(),
            )
        })?
        .map_err(|error| unavailable(format!("running ssh: {error}")))?;
        if !output.status.success() {
            return Err(unavailable(format!(
                "ssh {}: {}",
                self.config.destination(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A fresh call number (names the call's pid file).
    pub(crate) fn next_call(&self) -> u64 {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the master connection still runs (a dead one would make ssh fall back to a
    /// direct connection per call, silently).
    pub(crate) fn alive(&self) -> bool {
        let mut master = self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        master
            .as_mut()
            .is_some_and(|master| matches!(master.try_wait(), Ok(None)))
    }

    /// How the runner kills call `call`'s remote process group.
    pub(crate) fn remote_kill(&self, call: u64) -> crate::spawn::RemoteKill {
        crate::spawn::RemoteKill {
            ssh: self.config.ssh.clone(),
            prefix: {
                let mut args = call_args(&self.config, &self.control, "");
                // `call_args` ends with the (empty) remote line: the kill line replaces it.
                args.pop();
                args
            },
            remote_state: self.remote_state.clone(),
            call,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The remote state directory goes with the session (through the master, so before
        // it), then the master connection. Off the caller's thread when there is a runtime: a
        // slow or dead remote must not stall it (ConnectTimeout bounds the rest).
        let cleanup = (!self.remote_state.is_empty()).then(|| {
            let mut command = std::process::Command::new(&self.config.ssh);
            command
                .args(call_args(
                    &self.config,
                    &self.control,
                    &format!("rm -rf {}", quote(&self.remote_state)),
                ))
                .env_clear()
                .env("PATH", crate::env::DEFAULT_PATH)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            command
        });
        let master = self
            .master
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let finish = move || {
            if let Some(mut command) = cleanup {
                let _ = command.spawn().and_then(|mut child| child.wait());
            }
            // Killed on drop (`kill_on_drop`), after the removal went through it.
            drop(master);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(finish);
            }
            Err(_) => finish(),
        }
    }
}

fn unavailable(detail: String) -> Error {
    Error::SshUnavailable { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_expansions() {
        assert_eq!(quote("a'b $HOME `x`"), r"'a'\''b $HOME `x`'");
    }

    #[test]
    fn a_session_call_line() {
        let mut config = SshConfig::new("127.0.0.1");
        config.user = Some("agent".to_owned());
        config.port = Some(2222);
        config.identity = Some("/keys/id".into());
        config.known_hosts = Some("/keys/known_hosts".into());
        let invocation = ShellInvocation {
            login: false,
            script: ShellScript::Session {
                cwd: "/home/agent/src dir".to_owned(),
                command: "echo 'hi'".to_owned(),
            },
        };
        let env = BTreeMap::from([
            ("HOME".to_owned(), "/home/agent".to_owned()),
            ("PATH".to_owned(), crate::env::DEFAULT_PATH.to_owned()),
        ]);
        let plan = plan(
            &config,
            Path::new("/dev/shm/s/ssh-control"),
            &invocation,
            &env,
            "/tmp/slotbox-session-abc",
            true,
            7,
        );
        insta::assert_snapshot!(plan.to_string());
        assert_eq!(
            kill_line("/tmp/slotbox-session-abc", 7, "KILL"),
            ": >'/tmp/slotbox-session-abc'/cancel.7; p=$(cat '/tmp/slotbox-session-abc'/pid.7 2>/dev/null) && kill -KILL -\"$p\" 2>/dev/null; true"
        );
    }
}
