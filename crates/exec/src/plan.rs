//! Spawn plans: what process to start for a shell invocation in a backend, as plain data.
//!
//! Planning is pure: `Backend::plan` turns a `ShellInvocation` plus the host facts in `HostLayout`
//! into a `SpawnPlan` (program, argv, environment, working directory) without touching the system.
//! `spawn::run` is the only code that starts processes. Plans are snapshot-tested for every backend,
//! so a change to a sandbox's argv shows up in review as a diff.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::path::PathBuf;

use crate::backend::Backend;
use crate::error::Error;
use crate::error::Result;

/// The script run for every session call. Arguments: `$1` the session's state directory (as the
/// backend sees it), `$2` the tracked working directory, `$3` the command.
///
/// Why it looks like this:
/// - state lives in a file, never in markers mixed into the output, so the output is exactly what
///   the command printed;
/// - `builtin` everywhere, because the snapshot may define functions named `cd`, `eval` or `pwd`;
/// - a deleted cwd falls back to its nearest existing ancestor;
/// - after the command, exports, functions and aliases are dumped to `snapshot.next`, ending with
///   the line `# slotbox-cwd <physical cwd>`. That line is written last, so its presence proves
///   the dump is whole; the caller then renames the file over `snapshot` (atomic). A command that
///   `exit`s or is killed never writes it, and the previous state stays as it was;
/// - only builtins run after the command and everything goes to one file: no fork, one file
///   written, so a call costs little more than starting bash.
pub const SESSION_WRAPPER: &str = r#"__slotbox_state=$1 __slotbox_cwd=$2 __slotbox_cmd=$3
builtin set --
builtin source "$__slotbox_state/snapshot" >/dev/null 2>&1
builtin shopt -s expand_aliases
while ! builtin cd -- "$__slotbox_cwd" 2>/dev/null; do
  case $__slotbox_cwd in
    /) builtin exit 126 ;;
    /*/*) __slotbox_cwd=${__slotbox_cwd%/*} ;;
    *) __slotbox_cwd=/ ;;
  esac
done
builtin unset __slotbox_cwd
builtin eval "$__slotbox_cmd"
__slotbox_ec=$?
builtin export -n PWD OLDPWD SHLVL 2>/dev/null
{ builtin export -p && builtin declare -f && builtin alias -p &&
  builtin printf '\n# slotbox-cwd ' && builtin pwd -P; } >"$__slotbox_state/snapshot.next" 2>/dev/null
builtin exit "$__slotbox_ec""#;

/// The prefix of the snapshot's last line, which carries the cwd.
pub const CWD_LINE_PREFIX: &str = "\n# slotbox-cwd ";

/// What bash should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellScript {
    /// A session call: the session wrapper around `command`, starting in `cwd`.
    Session {
        /// The tracked working directory, as the backend sees it.
        cwd: String,
        /// The command text.
        command: String,
    },
    /// A stateless call: `bash -c command` in `cwd`.
    OneShot {
        /// The working directory, as the backend sees it.
        cwd: String,
        /// The command text.
        command: String,
    },
}

/// One bash invocation inside a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInvocation {
    /// Run bash as a login shell (`-l`), which reads the profile; used once per session to take the
    /// environment snapshot.
    pub login: bool,
    /// What to run.
    pub script: ShellScript,
}

/// Everything `Backend::plan` needs besides the backend itself.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Host facts.
    pub layout: &'a HostLayout,
    /// The workspace on the host.
    pub workspace: &'a Path,
    /// The session's private directories on the host (`None` for one-shot calls).
    pub session: Option<SessionDirs<'a>>,
    /// The command's environment (already resolved from the `EnvPolicy`).
    pub env: &'a BTreeMap<String, String>,
    /// What to run.
    pub invocation: &'a ShellInvocation,
}

/// A session's private directories on the host.
#[derive(Debug, Clone, Copy)]
pub struct SessionDirs<'a> {
    /// Snapshot and cwd files.
    pub state: &'a Path,
    /// What sandboxes mount as `/tmp`.
    pub tmp: &'a Path,
}

/// A process to start: the output of planning, the input of `spawn::run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnPlan {
    /// The program (absolute path).
    pub program: PathBuf,
    /// Its arguments (without argv\[0\]).
    pub args: Vec<String>,
    /// Its whole environment: nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// Its working directory on the host.
    pub cwd: PathBuf,
    /// How the process gets a process group of its own, which the runner kills as a whole.
    pub group: ProcessGroup,
}

/// How a spawned process comes to lead its own process group (whose id is then its pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessGroup {
    /// The runner puts it in a new process group (same session).
    New,
    /// The program itself starts a new session (`setsid PROGRAM…`), detaching from slotbox's
    /// controlling terminal too; the runner must then leave the group alone, because `setsid(1)`
    /// forks when started as a group leader.
    NewSession,
}

/// A reviewable rendering: one argument per line, then the environment.
impl fmt::Display for SpawnPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "program: {}", self.program.display())?;
        writeln!(f, "cwd: {}", self.cwd.display())?;
        writeln!(f, "group: {:?}", self.group)?;
        writeln!(f, "args:")?;
        for arg in &self.args {
            if arg.contains('\n') {
                writeln!(f, "  <script, {} lines>", arg.lines().count())?;
            } else {
                writeln!(f, "  {arg}")?;
            }
        }
        writeln!(f, "env:")?;
        for (name, value) in &self.env {
            writeln!(f, "  {name}={value}")?;
        }
        Ok(())
    }
}

/// A top-level entry of the host's root that sandboxes must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A symlink such as `/bin -> usr/bin` on merged-/usr systems.
    Symlink {
        /// The path (`/bin`).
        path: String,
        /// Where it points (`usr/bin`).
        target: String,
    },
    /// A real directory, bound read-only.
    Dir {
        /// The path (`/lib64`).
        path: String,
    },
}

/// Facts about the host that plans depend on, read once by `HostLayout::probe` so that planning
/// itself stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// bash's absolute path.
    pub bash: String,
    /// `setsid(1)`'s absolute path (util-linux), if present.
    pub setsid: Option<String>,
    /// `/bin`, `/sbin`, `/lib*` as they are on this host.
    pub root_entries: Vec<RootEntry>,
    /// System directories besides `/usr` and `/etc` that exist and are bound read-only (`/opt`).
    pub extra_system_dirs: Vec<String>,
    /// Existing credential files under `/etc` that sandboxes hide (`/etc/shadow`, ssh host keys).
    pub masked_files: Vec<String>,
}

const ROOT_ENTRY_CANDIDATES: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
const EXTRA_SYSTEM_DIR_CANDIDATES: &[&str] = &["/opt"];
const MASK_CANDIDATES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
];
const BASH_CANDIDATES: &[&str] = &["/usr/bin/bash", "/bin/bash", "/usr/local/bin/bash"];
const SETSID_CANDIDATES: &[&str] = &["/usr/bin/setsid", "/bin/setsid"];

impl HostLayout {
    /// Reads the host's layout.
    pub fn probe() -> Result<Self> {
        let bash = BASH_CANDIDATES
            .iter()
            .find(|candidate| is_executable_file(Path::new(candidate)))
            .map(|found| (*found).to_owned())
            .ok_or_else(|| Error::BashMissing {
                searched: BASH_CANDIDATES.join(", "),
            })?;
        let setsid = SETSID_CANDIDATES
            .iter()
            .find(|candidate| is_executable_file(Path::new(candidate)))
            .map(|found| (*found).to_owned());
        let mut root_entries = Vec::new();
        for candidate in ROOT_ENTRY_CANDIDATES {
            let Ok(meta) = std::fs::symlink_metadata(candidate) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(candidate)
                    .map_err(Error::io(format!("reading the symlink {candidate}")))?;
                let target = utf8(&target)?.to_owned();
                root_entries.push(RootEntry::Symlink {
                    path: (*candidate).to_owned(),
                    target,
                });
            } else if meta.is_dir() {
                root_entries.push(RootEntry::Dir {
                    path: (*candidate).to_owned(),
                });
            }
        }
        let extra_system_dirs = EXTRA_SYSTEM_DIR_CANDIDATES
            .iter()
            .filter(|dir| Path::new(dir).is_dir())
            .map(|dir| (*dir).to_owned())
            .collect();
        let mut masked_files: Vec<String> = MASK_CANDIDATES
            .iter()
            .filter(|file| Path::new(file).exists())
            .map(|file| (*file).to_owned())
            .collect();
        // Private ssh host keys: readable to the sandbox's (namespaced) root otherwise.
        if let Ok(entries) = std::fs::read_dir("/etc/ssh") {
            let mut keys: Vec<String> = entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with("ssh_host_") && !name.ends_with(".pub"))
                .map(|name| format!("/etc/ssh/{name}"))
                .collect();
            keys.sort();
            masked_files.extend(keys);
        }
        Ok(Self {
            bash,
            setsid,
            root_entries,
            extra_system_dirs,
            masked_files,
        })
    }
}

impl Backend {
    /// Plans the process that runs `input.invocation` in this backend. Pure.
    pub fn plan(&self, input: &PlanInput<'_>) -> Result<SpawnPlan> {
        match self {
            Backend::Local => crate::backend::local::plan(input),
            Backend::Bubblewrap(config) => crate::backend::bubblewrap::plan(config, input),
            Backend::Apptainer(config) => crate::backend::apptainer::plan(config, input),
            Backend::Ssh(_) => Err(crate::Error::SshUnavailable {
                detail: "the ssh backend runs commands only in a session".to_owned(),
            }),
            // A container lives as long as its session; its commands are started by its agent.
            Backend::Docker(_) => Err(crate::Error::ContainerUnavailable {
                detail: "the docker backend runs commands only in a session".to_owned(),
            }),
        }
    }
}

/// bash's arguments for an invocation, given where the session state is as the backend sees it.
pub(crate) fn bash_args(invocation: &ShellInvocation, state_dir: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if invocation.login {
        args.push("-l".to_owned());
    }
    args.push("-c".to_owned());
    match &invocation.script {
        ShellScript::Session { cwd, command } => {
            args.push(SESSION_WRAPPER.to_owned());
            // $0: error messages read "bash: line 1: foo: command not found", as users expect.
            args.push("bash".to_owned());
            args.push(state_dir.unwrap_or("/nonexistent").to_owned());
            args.push(cwd.clone());
            args.push(command.clone());
        }
        ShellScript::OneShot { command, .. } => args.push(command.clone()),
    }
    args
}

pub(crate) fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::NonUtf8Path {
        path: path.to_owned(),
    })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
