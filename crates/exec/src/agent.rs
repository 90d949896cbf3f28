//! The sandbox agent: a small process living inside one long-lived sandbox, starting commands there
//! on request, so a call costs a fork/exec of bash instead of a whole new bwrap sandbox.
//!
//! The host and the agent talk over a `SOCK_SEQPACKET` socketpair (the agent's fd 0): one JSON
//! message per packet, so no framing. A `run` request carries the command's stdin, stdout and
//! stderr as file descriptors (`SCM_RIGHTS`), so output flows from the command straight to the
//! host's pipes, never through the agent. Requests too large for one packet travel in a memfd
//! passed alongside. The agent answers `started` (with the command's pid inside the namespace),
//! later `exited`; `signal` requests kill a command's process group. When the host closes its end,
//! the agent exits, bwrap exits, and the PID namespace (with everything left in it) ends.
//!
//! No `unsafe`: descriptors are received as `OwnedFd`s through rustix.

use std::io;
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::io::Read;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::net::RecvAncillaryBuffer;
use rustix::net::RecvAncillaryMessage;
use rustix::net::RecvFlags;
use rustix::net::SendAncillaryBuffer;
use rustix::net::SendAncillaryMessage;
use rustix::net::SendFlags;
use serde::Deserialize;
use serde::Serialize;
use tokio::io::unix::AsyncFd;

/// Largest JSON sent inline; larger requests go through a memfd (the socket's datagram limit is
/// about the size of its send buffer, typically 208 KiB).
const INLINE_MAX: usize = 32 * 1024;
/// Receive buffer: any inline message fits.
const RECEIVE_BUFFER: usize = INLINE_MAX + 1024;
/// stdin, stdout, stderr, and the optional memfd.
const MAX_FDS: usize = 4;

/// Host → agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Start `program args` with the passed stdio, in a new process group.
    Run {
        /// Echoed in the replies, so a late reply to an abandoned request is never taken for
        /// the current one.
        id: u64,
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
    },
    /// The real request is in the memfd passed with this message.
    Large,
    /// Send `signal` to the process group of the command started by run request `id` (if it
    /// still runs). By id, not pid, so the host can kill a command whose `started` it has not
    /// seen yet.
    Signal { id: u64, signal: i32 },
}

/// Agent → host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The agent is up (sent once, first).
    Ready,
    /// The command started; `pid` leads its process group.
    Started { id: u64, pid: i32 },
    /// The command could not start.
    Failed { id: u64, error: String },
    /// The command exited with `code` (128+N when killed by signal N).
    Exited { id: u64, code: i32 },
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// One end of the control socket, usable from async code.
#[derive(Debug)]
pub(crate) struct Channel {
    socket: AsyncFd<OwnedFd>,
    /// The next `run` request's id.
    next_id: std::sync::atomic::AtomicU64,
}

impl Channel {
    /// Connects to an agent listening at `path` (see `LISTEN_ENV`).
    pub(crate) fn connect(path: &std::path::Path) -> io::Result<Self> {
        use rustix::net::AddressFamily;
        use rustix::net::SocketFlags;
        use rustix::net::SocketType;
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&socket, &rustix::net::SocketAddrUnix::new(path)?)?;
        Self::new(socket)
    }

    pub(crate) fn new(socket: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&socket)?;
        // Deprecated because a borrowed raw fd could be closed behind tokio's back; an `OwnedFd`
        // is closed only when the `AsyncFd` drops it, so the soundness concern does not apply
        // (and the replacement, `register`, is `unsafe`).
        #[allow(deprecated)]
        let socket = AsyncFd::new(socket)?;
        Ok(Self {
            socket,
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A fresh request id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one message with descriptors.
    pub(crate) async fn send(
        &self,
        message: &impl Serialize,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<()> {
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        if json.len() > INLINE_MAX {
            // Too big for one packet: put it in a memfd and send that along.
            let memfd =
                rustix::fs::memfd_create("slotbox-request", rustix::fs::MemfdFlags::CLOEXEC)?;
            let mut file = std::fs::File::from(memfd);
            file.write_all(&json)?;
            let memfd = OwnedFd::from(file);
            let large = serde_json::to_vec(&Request::Large).map_err(io::Error::other)?;
            let mut all: Vec<std::os::fd::BorrowedFd<'_>> = fds.to_vec();
            all.push(memfd.as_fd());
            return self.send_packet(&large, &all).await;
        }
        self.send_packet(&json, fds).await
    }

    async fn send_packet(
        &self,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<()> {
        loop {
            let mut guard = self.socket.writable().await?;
            let sent = guard.try_io(|socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::other("too many descriptors for one message"));
                }
                rustix::net::sendmsg(
                    socket,
                    &[IoSlice::new(bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends without waiting (for drop paths, where nothing can be awaited); a full socket
    /// drops the message.
    pub(crate) fn send_now(&self, message: &impl Serialize) {
        let Ok(json) = serde_json::to_vec(message) else {
            return;
        };
        let mut control = SendAncillaryBuffer::default();
        let _ = rustix::net::sendmsg(
            self.socket.get_ref(),
            &[IoSlice::new(&json)],
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        );
    }

    /// Receives one message and its descriptors; `None` when the other end closed.
    pub(crate) async fn receive<T: for<'de> Deserialize<'de>>(
        &self,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let (length, mut fds) = loop {
            let mut guard = self.socket.readable().await?;
            let received = guard.try_io(|socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let message = rustix::net::recvmsg(
                    socket,
                    &mut [IoSliceMut::new(&mut buffer)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                let mut fds = Vec::new();
                for item in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = item {
                        fds.extend(received);
                    }
                }
                Ok((message.bytes, fds))
            });
            match received {
                Ok(result) => break result?,
                Err(_would_block) => continue,
            }
        };
        if length == 0 && fds.is_empty() {
            return Ok(None);
        }
        let bytes = &buffer[..length.min(buffer.len())];
        let large: Option<Request> = serde_json::from_slice(bytes).ok();
        if matches!(large, Some(Request::Large)) {
            let memfd = fds
                .pop()
                .ok_or_else(|| io::Error::other("a large request without its memfd"))?;
            let mut file = std::fs::File::from(memfd);
            let mut json = Vec::new();
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
            file.read_to_end(&mut json)?;
            let message = serde_json::from_slice(&json).map_err(io::Error::other)?;
            return Ok(Some((message, fds)));
        }
        let message = serde_json::from_slice(bytes).map_err(io::Error::other)?;
        Ok(Some((message, fds)))
    }
}

/// The agent's main: serves requests on fd 0 until the host goes away. Call it from a binary
/// (`slotbox __sandbox-agent`, or the `slotbox-sandbox-agent` test binary).
pub fn run_main() -> io::Result<()> {
    let control = match std::env::var_os(LISTEN_ENV) {
        // In a container: the host connects through a socket in a directory both can reach.
        Some(path) => accept_one(std::path::Path::new(&path))?,
        None => io::stdin().as_fd().try_clone_to_owned()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(control))
}

/// Names the socket path the agent listens on for its one host connection, instead of the
/// socketpair on fd 0 (set for agents in containers, which cannot inherit a descriptor).
pub const LISTEN_ENV: &str = "SLOTBOX_AGENT_LISTEN";

/// Listens at `path`, accepts one connection and stops listening (the socket file goes too).
fn accept_one(path: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::net::AddressFamily;
    use rustix::net::SocketFlags;
    use rustix::net::SocketType;
    // A leftover from an earlier agent would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let address = rustix::net::SocketAddrUnix::new(path)?;
    rustix::net::bind(&listener, &address)?;
    rustix::net::listen(&listener, 1)?;
    let connection = rustix::net::accept_with(&listener, SocketFlags::CLOEXEC)?;
    drop(listener);
    let _ = std::fs::remove_file(path);
    Ok(connection)
}

/// Commands still running: run request id → pid (which leads the command's process group).
type Running = Arc<std::sync::Mutex<std::collections::HashMap<u64, i32>>>;

async fn serve(control: OwnedFd) -> io::Result<()> {
    let channel = Arc::new(Channel::new(control)?);
    let running: Running = Arc::default();
    channel.send(&Reply::Ready, &[]).await?;
    while let Some((request, fds)) = channel.receive::<Request>().await? {
        match request {
            Request::Run {
                id,
                program,
                args,
                env,
                cwd,
            } => {
                if let Some(failure) = start(&channel, &running, id, program, args, env, cwd, fds) {
                    channel.send(&failure, &[]).await?;
                }
            }
            Request::Signal { id, signal } => {
                let pgid = running
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&id)
                    .copied();
                // Never group 0 (our own) or 1 (bwrap's init, the namespace's life).
                if let Some(pgid) = pgid.filter(|pgid| *pgid > 1)
                    && let Ok(signal) = nix::sys::signal::Signal::try_from(signal)
                {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
                }
            }
            Request::Large => {}
        }
    }
    Ok(())
}

/// Starts a command; its `started` and `exited` replies come from a task, in that order.
/// Returns the failure reply when it could not start.
#[allow(clippy::too_many_arguments)]
fn start(
    channel: &Arc<Channel>,
    running: &Running,
    id: u64,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    fds: Vec<OwnedFd>,
) -> Option<Reply> {
    let [stdin, stdout, stderr]: [OwnedFd; 3] = match fds.try_into() {
        Ok(stdio) => stdio,
        Err(_) => {
            return Some(Reply::Failed {
                id,
                error: "a run request needs exactly three descriptors".to_owned(),
            });
        }
    };
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args)
        .env_clear()
        .envs(env)
        .current_dir(&cwd)
        .stdin(std::process::Stdio::from(stdin))
        .stdout(std::process::Stdio::from(stdout))
        .stderr(std::process::Stdio::from(stderr))
        .process_group(0);
    let spawned = command.spawn();
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            return Some(Reply::Failed {
                id,
                error: format!("starting {program}: {error}"),
            });
        }
    };
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return Some(Reply::Failed {
            id,
            error: "the command exited before its pid was known".to_owned(),
        });
    };
    {
        let mut running = running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep the most recent commands' groups signalable (see the exit task below).
        running.retain(|earlier, _| earlier.saturating_add(64) > id);
        running.insert(id, pid);
    }
    let channel = Arc::clone(channel);
    tokio::spawn(async move {
        let _ = channel.send(&Reply::Started { id, pid }, &[]).await;
        let code = match child.wait().await {
            Ok(status) => crate::spawn::exit_code_of(status),
            Err(_) => 1,
        };
        // The id stays mapped after the shell exits: a child it left in its process group
        // (ignoring SIGTERM, holding the output pipe) must still be reachable by the final
        // SIGKILL. Old entries are dropped when new commands start.
        let _ = channel.send(&Reply::Exited { id, code }, &[]).await;
    });
    None
}

/// A session's long-lived sandbox, seen from the host: the bwrap process tree running the agent,
/// and the control channel to it. Dropping it kills the whole tree.
#[derive(Debug)]
pub(crate) struct SandboxHost {
    /// Kept so tokio reaps it; the tree is killed through `pgid`.
    _child: tokio::process::Child,
    /// bwrap leads its own session and process group (`setsid`), which holds the namespace init.
    pgid: nix::unistd::Pid,
    pub(crate) channel: Channel,
    /// The sandbox's cgroup, when limits apply; dropped after the tree is killed.
    _cgroup: Option<crate::cgroup::SandboxCgroup>,
}

/// How long a new sandbox may take to report its agent ready.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl SandboxHost {
    /// Starts the sandbox planned by `plan` with the agent's end of a fresh control socket as
    /// its stdin, puts its processes in a cgroup with `limits` (before any command runs), and
    /// waits for the agent to be ready.
    pub(crate) async fn start(
        plan: &crate::plan::SpawnPlan,
        limits: Option<&crate::backend::SandboxLimits>,
    ) -> crate::Result<Self> {
        use rustix::net::AddressFamily;
        use rustix::net::SocketFlags;
        use rustix::net::SocketType;
        let (host_end, agent_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|error| crate::Error::Io {
            context: "creating the sandbox control socket".to_owned(),
            source: error.into(),
        })?;
        let mut command = crate::spawn::host_command(plan);
        command
            .stdin(std::process::Stdio::from(agent_end))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let spawned = command.spawn();
        drop(command);
        let child = spawned.map_err(|source| crate::Error::Io {
            context: format!("starting the session sandbox ({})", plan.program.display()),
            source,
        })?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(nix::unistd::Pid::from_raw)
            .ok_or(crate::Error::SandboxGone)?;
        let channel = Channel::new(host_end).map_err(|source| crate::Error::Io {
            context: "watching the sandbox control socket".to_owned(),
            source,
        })?;
        let cgroup = match limits {
            Some(limits) => {
                // Unique across processes and time (pids are reused; pid_max may be 32768).
                let name = format!("slotbox-{}", uuid::Uuid::new_v4().simple());
                let cgroup =
                    crate::cgroup::SandboxCgroup::create(&limits.layout, &name, limits.limits)?;
                // bwrap now: what it forks from here on is born inside.
                cgroup.add(pgid.as_raw())?;
                Some(cgroup)
            }
            None => None,
        };
        let mut host = Self {
            _child: child,
            pgid,
            channel,
            _cgroup: None,
        };
        let ready = tokio::time::timeout(READY_TIMEOUT, host.channel.receive::<Reply>()).await;
        match ready {
            Ok(Ok(Some((Reply::Ready, _)))) => {}
            Ok(Ok(None)) => return Err(crate::Error::SandboxGone),
            Ok(Ok(Some((other, _)))) => {
                return Err(crate::Error::Io {
                    context: "starting the session sandbox".to_owned(),
                    source: io::Error::other(format!("unexpected first message {other:?}")),
                });
            }
            Ok(Err(source)) => {
                return Err(crate::Error::Io {
                    context: "starting the session sandbox".to_owned(),
                    source,
                });
            }
            Err(_elapsed) => {
                return Err(crate::Error::Io {
                    context: "starting the session sandbox".to_owned(),
                    source: io::Error::other("the sandbox agent did not report ready"),
                });
            }
        }
        if let Some(cgroup) = cgroup {
            // Whatever bwrap forked before it was moved (its namespace init, the agent), before
            // the first command: commands are the agent's children and inherit the cgroup.
            for pid in crate::cgroup::process_tree(pgid.as_raw()) {
                if let Err(error) = cgroup.add(pid) {
                    // Only a process that exited meanwhile may be skipped.
                    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        return Err(error);
                    }
                }
            }
            host._cgroup = Some(cgroup);
        }
        Ok(host)
    }
}

impl Drop for SandboxHost {
    fn drop(&mut self) {
        // The namespace init is in this group: its death ends every process in the sandbox.
        let _ = nix::sys::signal::killpg(self.pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(self.pgid, nix::sys::signal::Signal::SIGKILL);
    }
}
