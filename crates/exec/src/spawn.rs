//! The runner: starts a `SpawnPlan` and waits for it, event-driven, with every process rule in one
//! place.
//!
//! Rules, each for a reason:
//! - The environment is cleared and set from the plan: nothing of slotbox's own leaks in.
//! - stdin is `/dev/null` unless data is given (then it is written and closed), so `cat` or a
//!   prompt never waits for input that cannot come.
//! - stdout and stderr share one pipe, so the output is merged in the order it was written
//!   (`Streams::Merged`); with `Streams::Separate` stderr gets a pipe and a capture of its own.
//! - The child leads its own process group, so a timeout can kill the whole tree (`killpg`).
//! - No `pre_exec` hook. Any hook makes std fork the whole slotbox process instead of using
//!   `posix_spawn` (vfork): measured +0.25 to 0.5 ms per call here, and fork gets slower as the
//!   server's memory grows. The one thing a hook would add, `PR_SET_PDEATHSIG`, comes from bwrap's
//!   `--die-with-parent` in the sandboxed backend; the local backend, which isolates nothing,
//!   does without it (its commands outlive a slotbox that is SIGKILLed).
//! - Completion is the child's exit plus EOF on the pipe, awaited together: no polling. A
//!   background grandchild may keep the pipe open forever; after the shell exits the call waits at
//!   most `DRAIN_AFTER_EXIT` for EOF, then returns, and a detached task keeps reading (and
//!   discarding) so the grandchild is not killed by SIGPIPE.
//! - Stopping (timeout, stall, interrupt) is SIGTERM to the group, `KILL_GRACE` for it to exit,
//!   then SIGKILL to the group regardless.
//! - If the future is dropped mid-run (a client went away), a guard SIGKILLs the group.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::Child;

use crate::Error;
use crate::Result;
use crate::limits::Interrupt;
use crate::limits::StallTimeout;
use crate::limits::Timeout;
use crate::output::BoundedCapture;
use crate::output::OutputCap;
use crate::output::StreamDecoder;
use crate::plan::ProcessGroup;
use crate::plan::SpawnPlan;

/// How long to wait for pipe EOF after the shell exited. Longer only delays calls that left a
/// background job holding the pipe; shorter risks losing output a job printed right at the end.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Between SIGTERM and SIGKILL: time for a well-behaved process to clean up. Together with
/// `DRAIN_AFTER_EXIT` it bounds how long a process that ignores SIGTERM survives (under 2 s).
pub const KILL_GRACE: Duration = Duration::from_millis(1000);

/// How long starting a command may take (an agent's `started`): far above the milliseconds it
/// takes, far below any wait that looks like a hang.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Read size: large enough that a flood of output costs few wakeups.
const READ_CHUNK: usize = 64 * 1024;

/// What to run and under which limits.
#[derive(Debug)]
pub(crate) struct RunSpec<'a> {
    pub(crate) plan: &'a SpawnPlan,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) timeout: Option<Timeout>,
    pub(crate) stall_timeout: Option<StallTimeout>,
    pub(crate) interrupt: Option<&'a Interrupt>,
    pub(crate) cap: OutputCap,
    pub(crate) streams: Streams,
    /// Receives stdout (the merged output) as it is decoded.
    pub(crate) sink: Option<tokio::sync::mpsc::Sender<String>>,
    pub(crate) launcher: Launcher<'a>,
}

/// Whether stderr is merged into stdout or captured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streams {
    /// One stream, in the order things were written (what agents see).
    #[default]
    Merged,
    /// stdout and stderr captured apart, each under the cap (the seed API's format needs this).
    Separate,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The process exited with this code (128+N when killed by signal N).
    Exited(i32),
    /// The wall-clock limit expired.
    TimedOut(Timeout),
    /// No output for the stall limit.
    Stalled(StallTimeout),
    /// The interrupt handle fired.
    Interrupted,
}

/// The result of a run.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    pub(crate) ending: Ending,
    pub(crate) capture: BoundedCapture,
    /// stderr, with `Streams::Separate`.
    pub(crate) stderr: Option<BoundedCapture>,
    pub(crate) elapsed: Duration,
    /// The cwd a remote session reported after the call (ssh).
    pub(crate) reported_cwd: Option<String>,
}

/// How to kill a command's process group on a remote host (the ssh backend): killing the
/// local ssh client alone would leave it running there.
#[derive(Debug, Clone)]
pub(crate) struct RemoteKill {
    /// The ssh client.
    pub(crate) ssh: std::path::PathBuf,
    /// Its arguments up to the remote line (control socket, options, destination, `--`).
    pub(crate) prefix: Vec<String>,
    /// The remote state directory holding the command's pid file.
    pub(crate) remote_state: String,
    /// The call's number (its pid file is `pid.<call>`).
    pub(crate) call: u64,
}

/// The line a remote command prints last on its stderr channel: `# slotbox-exit N`.
pub(crate) const REMOTE_EXIT: &str = "# slotbox-exit ";

impl RemoteKill {
    /// SIGKILLs the remote group and waits until the kill ran.
    async fn kill_now(&self) {
        let _ = tokio::process::Command::new(&self.ssh)
            .args(&self.prefix)
            .arg(crate::backend::ssh::kill_line(
                &self.remote_state,
                self.call,
                "KILL",
            ))
            .env_clear()
            .env("PATH", crate::env::DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
    }

    /// Sends `signal` to the remote group, in the background (a signal must not wait).
    fn send(&self, signal: Signal) {
        let name = match signal {
            Signal::SIGKILL => "KILL",
            Signal::SIGTERM => "TERM",
            _ => return,
        };
        let spawned = tokio::process::Command::new(&self.ssh)
            .args(&self.prefix)
            .arg(crate::backend::ssh::kill_line(
                &self.remote_state,
                self.call,
                name,
            ))
            .env_clear()
            .env("PATH", crate::env::DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            // Reaped in the background; the kill must not be cut short by a drop.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// Where a plan's process is started.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Launcher<'a> {
    /// Spawned by this process, on the host.
    Host,
    /// Spawned on the host (an ssh client) for a command whose process group is remote.
    Remote(&'a RemoteKill),
    /// Started by the agent of a long-lived sandbox (see `agent`); the plan is in its terms.
    Agent(&'a crate::agent::Channel),
}

/// A started command: how to wait for it and how to signal its process group. Kills the group
/// when dropped while armed, so a run abandoned midway leaves nothing behind.
enum Process<'a> {
    Host {
        child: Child,
        pgid: Option<Pid>,
        /// The leader was waited for: its pid may be reused from now on.
        reaped: bool,
        /// The command's remote group, killed along with the local one (boxed: rare, large).
        remote: Option<Box<RemoteKill>>,
    },
    Agent {
        channel: &'a crate::agent::Channel,
        /// The run request's id, which names the command in signals and replies.
        id: u64,
        /// Whether signals (and the kill on drop) still apply.
        armed: bool,
    },
}

impl Process<'_> {
    fn signal(&self, signal: Signal) {
        if let Process::Host {
            pgid: Some(_),
            remote: Some(remote),
            ..
        } = self
        {
            remote.send(signal);
        }
        match self {
            Process::Host {
                pgid: Some(pgid),
                reaped: false,
                ..
            } => {
                // ESRCH (group already gone) is the expected outcome of a late kill.
                let _ = killpg(*pgid, signal);
                // Also the leader itself: right after spawn, `setsid` may not have made the group
                // yet, and the leader (setsid, or bwrap before it cloned) is all there is then.
                let _ = nix::sys::signal::kill(*pgid, signal);
            }
            Process::Host {
                pgid: Some(pgid),
                reaped: true,
                ..
            } => {
                // The leader is gone, so its pid can be reused (pid_max can be as low as 32768).
                // A pid in use as a process group id is never reallocated, so if a process with
                // that pid exists it is a newcomer, whose group this is not: leave it alone.
                if !std::path::Path::new(&format!("/proc/{pgid}")).exists() {
                    let _ = killpg(*pgid, signal);
                }
            }
            Process::Agent {
                channel,
                id,
                armed: true,
            } => channel.send_now(&crate::agent::Request::Signal {
                id: *id,
                signal: signal as i32,
            }),
            Process::Host { pgid: None, .. } | Process::Agent { armed: false, .. } => {}
        }
    }

    /// Kills the remote group now and waits for that to be done (bounded).
    async fn kill_remote_now(&self) {
        if let Process::Host {
            remote: Some(remote),
            ..
        } = self
        {
            let _ = tokio::time::timeout(KILL_GRACE * 5, remote.kill_now()).await;
        }
    }

    fn disarm(&mut self) {
        match self {
            Process::Host { pgid, .. } => *pgid = None,
            Process::Agent { armed, .. } => *armed = false,
        }
    }

    /// Waits for the process to exit; its exit code.
    async fn wait(&mut self) -> Result<i32> {
        match self {
            Process::Host { child, reaped, .. } => {
                let status = child
                    .wait()
                    .await
                    .map_err(Error::io("waiting for the command"))?;
                *reaped = true;
                Ok(exit_code_of(status))
            }
            Process::Agent { channel, id, .. } => loop {
                match channel.receive::<crate::agent::Reply>().await {
                    // Only this command's exit: an abandoned earlier one may report late.
                    Ok(Some((crate::agent::Reply::Exited { id: exited, code }, _)))
                        if exited == *id =>
                    {
                        return Ok(code);
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(Error::SandboxGone),
                    Err(source) => {
                        return Err(Error::Io {
                            context: "waiting for the sandbox agent".to_owned(),
                            source,
                        });
                    }
                }
            },
        }
    }
}

impl Drop for Process<'_> {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The host process a plan describes: program, arguments, working directory and the whole
/// environment (nothing inherited). The caller sets stdio and spawns.
pub(crate) fn host_command(plan: &SpawnPlan) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&plan.program);
    command
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .current_dir(&plan.cwd);
    command
}

/// Starts `plan` with `stdio` (stdin, stdout, stderr); the descriptors are consumed, so the
/// caller keeps no copy of the pipes' write ends.
async fn launch<'a>(
    launcher: Launcher<'a>,
    plan: &SpawnPlan,
    stdio: [OwnedFd; 3],
) -> Result<Process<'a>> {
    let [stdin, stdout, stderr] = stdio;
    let remote = match launcher {
        Launcher::Remote(remote) => Some(Box::new(remote.clone())),
        _ => None,
    };
    match launcher {
        Launcher::Host | Launcher::Remote(_) => {
            let mut command = host_command(plan);
            command
                .stdin(Stdio::from(stdin))
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr));
            match plan.group {
                ProcessGroup::New => {
                    command.process_group(0);
                }
                // setsid(1) makes the group itself (and would fork if it already led one).
                ProcessGroup::NewSession => {}
            }
            let spawned = command.spawn();
            drop(command);
            let child = spawned.map_err(|source| spawn_error(plan, source))?;
            let pgid = child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw);
            Ok(Process::Host {
                child,
                pgid,
                reaped: false,
                remote,
            })
        }
        Launcher::Agent(channel) => {
            let id = channel.next_id();
            let request = crate::agent::Request::Run {
                id,
                program: plan.program.to_string_lossy().into_owned(),
                args: plan.args.clone(),
                env: plan.env.clone().into_iter().collect(),
                cwd: plan.cwd.to_string_lossy().into_owned(),
            };
            let sent = channel
                .send(&request, &[stdin.as_fd(), stdout.as_fd(), stderr.as_fd()])
                .await;
            drop((stdin, stdout, stderr));
            sent.map_err(|source| match source.kind() {
                // The agent is gone (killed by a command, or its sandbox died): the caller
                // restarts the session rather than failing every later call.
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected => Error::SandboxGone,
                _ => Error::Io {
                    context: "sending a command to the sandbox agent".to_owned(),
                    source,
                },
            })?;
            // From here the command may be running: if this future is dropped before `started`
            // arrives, dropping `process` still kills it (signals name the request id).
            let process = Process::Agent {
                channel,
                id,
                armed: true,
            };
            loop {
                match channel.receive::<crate::agent::Reply>().await {
                    Ok(Some((crate::agent::Reply::Started { id: started, .. }, _)))
                        if started == id =>
                    {
                        return Ok(process);
                    }
                    Ok(Some((crate::agent::Reply::Failed { id: failed, error }, _)))
                        if failed == id =>
                    {
                        let mut process = process;
                        process.disarm();
                        return Err(Error::Io {
                            context: "starting a command in the sandbox".to_owned(),
                            source: io::Error::other(error),
                        });
                    }
                    // Replies about earlier commands whose calls were abandoned: those were
                    // killed by id when their calls were dropped, and nothing waits for them.
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(Error::SandboxGone),
                    Err(source) => {
                        return Err(Error::Io {
                            context: "talking to the sandbox agent".to_owned(),
                            source,
                        });
                    }
                }
            }
        }
    }
}

/// Output side of the run: the pipe, decoding and capture.
struct OutputPipe {
    reader: pipe::Receiver,
    decoder: StreamDecoder,
    capture: BoundedCapture,
    buffer: Vec<u8>,
    eof: bool,
    /// The end of the text seen so far (at most one line), to spot an exit report.
    last_line: String,
}

impl OutputPipe {
    /// Handles one read result; returns whether any output arrived.
    fn take(&mut self, read: io::Result<usize>) -> bool {
        self.take_text(read).is_some()
    }

    /// The exit code in a remote exit report (`REMOTE_EXIT` line) that ends the text so far.
    fn reported_exit(&mut self, text: &str) -> Option<i32> {
        self.last_line.push_str(text);
        if let Some(at) = self.last_line[..self.last_line.len().saturating_sub(1)].rfind('\n') {
            self.last_line.drain(..=at);
        }
        // Only a short line can be a report; anything longer is output.
        if self.last_line.len() > 64 {
            self.last_line.clear();
            return None;
        }
        self.last_line
            .strip_prefix(REMOTE_EXIT)?
            .strip_suffix('\n')?
            .parse()
            .ok()
    }

    /// Handles one read result; returns the text it decoded, if any bytes arrived.
    fn take_text(&mut self, read: io::Result<usize>) -> Option<String> {
        match read {
            Ok(0) | Err(_) => {
                // A read error on our own pipe means no more output can arrive either.
                self.eof = true;
                let rest = self.decoder.decode(&[], true);
                self.capture.push(&rest);
                (!rest.is_empty()).then_some(rest)
            }
            Ok(n) => {
                let text = self.decoder.decode(&self.buffer[..n], false);
                self.capture.push(&text);
                Some(text)
            }
        }
    }

    fn new(read_end: io::PipeReader, cap: OutputCap) -> Result<Self> {
        let reader = pipe::Receiver::from_owned_fd(OwnedFd::from(read_end))
            .map_err(Error::io("watching an output pipe"))?;
        Ok(Self {
            reader,
            decoder: StreamDecoder::new(),
            capture: BoundedCapture::new(cap),
            buffer: vec![0u8; READ_CHUNK],
            eof: false,
            last_line: String::new(),
        })
    }

    /// Reads until EOF or `deadline`.
    async fn drain_until(&mut self, deadline: tokio::time::Instant) {
        while !self.eof {
            match tokio::time::timeout_at(deadline, self.reader.read(&mut self.buffer)).await {
                Ok(read) => {
                    self.take(read);
                }
                Err(_elapsed) => return,
            }
        }
    }

    /// Takes what is already in the pipe without waiting (the end of the output, which a full
    /// stream consumer may have held back), flushes the decoder, and hands the pipe to a task
    /// that discards whatever background jobs still write, until they close it.
    fn finish(mut self, sink: &mut Option<tokio::sync::mpsc::Sender<String>>) -> BoundedCapture {
        while !self.eof {
            match self.reader.try_read(&mut self.buffer) {
                Ok(n) => {
                    if let Some(text) = self.take_text(Ok(n)) {
                        // The consumer gets what fits; the result keeps all of it (bounded).
                        if let Some(sender) = sink.as_ref() {
                            let _ = sender.try_send(text);
                        }
                    }
                }
                Err(_would_block_or_error) => break,
            }
        }
        if !self.eof {
            let rest = self.decoder.decode(&[], true);
            self.capture.push(&rest);
            let mut reader = self.reader;
            tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
        self.capture
    }
}

/// Reads the next chunk of an optional pipe; never resolves for a missing or finished one.
async fn read_optional(pipe: &mut Option<OutputPipe>) -> io::Result<usize> {
    match pipe {
        Some(pipe) if !pipe.eof => pipe.reader.read(&mut pipe.buffer).await,
        _ => std::future::pending().await,
    }
}

/// Whether the stream consumer can take a chunk now (always, without one).
fn sink_ready(sink: &Option<tokio::sync::mpsc::Sender<String>>) -> bool {
    sink.as_ref()
        .is_none_or(|sink| sink.capacity() > 0 || sink.is_closed())
}

/// Resolves when a full sink has room again (or its consumer went away).
async fn sink_room(sink: &Option<tokio::sync::mpsc::Sender<String>>) {
    match sink {
        Some(sink) => {
            // Reserving and dropping the permit gives the slot back: this only waits for room.
            let _ = sink.reserve().await;
        }
        None => std::future::pending().await,
    }
}

/// Passes a chunk to the stream consumer; forgets a consumer that went away.
fn forward(sink: &mut Option<tokio::sync::mpsc::Sender<String>>, text: String) {
    if let Some(sender) = sink
        && sender.try_send(text).is_err()
    {
        // Only possible when closed: `sink_ready` gated the read on capacity.
        *sink = None;
    }
}

fn all_eof(output: &OutputPipe, stderr: &Option<OutputPipe>) -> bool {
    output.eof && stderr.as_ref().is_none_or(|pipe| pipe.eof)
}

/// Runs `spec` to completion.
pub(crate) async fn run(spec: RunSpec<'_>) -> Result<RunOutcome> {
    let started = Instant::now();
    let plan = spec.plan;
    let (read_end, write_end) = io::pipe().map_err(Error::io("creating the output pipe"))?;
    let (stderr_read_end, stderr_write_end) = match spec.streams {
        Streams::Merged => (
            None,
            write_end
                .try_clone()
                .map_err(Error::io("duplicating the output pipe"))?,
        ),
        Streams::Separate => {
            let (read, write) = io::pipe().map_err(Error::io("creating the stderr pipe"))?;
            (Some(read), write)
        }
    };

    // stdin: our own pipe when there is data (written by a task below), else /dev/null.
    let (stdin_read_end, stdin_writer) = match &spec.stdin {
        Some(_) => {
            let (read, write) = io::pipe().map_err(Error::io("creating the stdin pipe"))?;
            let writer = pipe::Sender::from_owned_fd(OwnedFd::from(write))
                .map_err(Error::io("watching the stdin pipe"))?;
            (OwnedFd::from(read), Some(writer))
        }
        None => (
            OwnedFd::from(
                std::fs::File::open("/dev/null").map_err(Error::io("opening /dev/null"))?,
            ),
            None,
        ),
    };
    let stdio = [
        stdin_read_end,
        OwnedFd::from(write_end),
        OwnedFd::from(stderr_write_end),
    ];
    // `launch` consumes our copies of the write ends, or EOF would never arrive.
    // An agent that stopped answering (a command can stop it) must not hang the call.
    let mut process = tokio::time::timeout(LAUNCH_TIMEOUT, launch(spec.launcher, plan, stdio))
        .await
        .map_err(|_| Error::SandboxGone)??;

    if let (Some(data), Some(mut stdin)) = (spec.stdin, stdin_writer) {
        // A separate task: a command that reads its input slowly (or never) must not block the
        // output loop. A broken pipe means the command did not want all of it, which is fine.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            drop(stdin);
        });
    }

    let mut output = OutputPipe::new(read_end, spec.cap)?;
    // A remote command's stderr channel ends with its reports (`backend::ssh`): room for them
    // beyond the cap, so they are never cut; the session applies the cap once they are out.
    let stderr_cap = match spec.launcher {
        Launcher::Remote(_) => OutputCap::chars(spec.cap.get().saturating_add(8192)),
        _ => spec.cap,
    };
    let mut stderr = stderr_read_end
        .map(|read_end| OutputPipe::new(read_end, stderr_cap))
        .transpose()?;

    let far_future = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    // Saturating: an absurd limit means "never", not an overflow panic.
    let after = |duration: Duration| {
        tokio::time::Instant::now()
            .checked_add(duration)
            .map_or(far_future, |at| at.min(far_future))
    };
    let deadline = tokio::time::sleep_until(
        spec.timeout
            .map_or(far_future, |timeout| after(timeout.duration())),
    );
    let stall_limit = spec.stall_timeout;
    let stall =
        tokio::time::sleep_until(stall_limit.map_or(far_future, |stall| after(stall.duration())));
    let drain = tokio::time::sleep_until(far_future);
    tokio::pin!(deadline, stall, drain);
    let never = Interrupt::new();
    let interrupt = spec.interrupt.unwrap_or(&never);

    let mut sink = spec.sink;
    let mut exit_code: Option<i32> = None;
    let remote = matches!(spec.launcher, Launcher::Remote(_));
    let stop: Option<Ending> = loop {
        if exit_code.is_some() && all_eof(&output, &stderr) {
            break None;
        }
        tokio::select! {
            // While a stream consumer is full, reading pauses (the command feels backpressure);
            // timers and interrupts stay live.
            read = output.reader.read(&mut output.buffer), if !output.eof && sink_ready(&sink) => {
                if let Some(text) = output.take_text(read) {
                    forward(&mut sink, text);
                    if let Some(stall_limit) = stall_limit {
                        stall.as_mut().reset(tokio::time::Instant::now() + stall_limit.duration());
                    }
                }
            }
            () = sink_room(&sink), if !sink_ready(&sink) => {
                // Time spent waiting for a slow consumer is not the command's silence.
                if let Some(stall_limit) = stall_limit {
                    stall.as_mut().reset(after(stall_limit.duration()));
                }
            }
            read = read_optional(&mut stderr) => {
                let text = stderr.as_mut().and_then(|pipe| pipe.take_text(read));
                if text.is_some()
                    && let Some(stall_limit) = stall_limit
                {
                    stall.as_mut().reset(tokio::time::Instant::now() + stall_limit.duration());
                }
                // A remote command reports its end on the stderr channel: the local client may
                // go on waiting for background jobs that hold the channel open.
                if remote
                    && exit_code.is_none()
                    && let (Some(text), Some(pipe)) = (text, stderr.as_mut())
                    && let Some(code) = pipe.reported_exit(&text)
                {
                    exit_code = Some(code);
                    drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
            }
            status = process.wait(), if exit_code.is_none() => {
                exit_code = Some(status?);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = &mut drain, if exit_code.is_some() => break None,
            () = &mut deadline, if spec.timeout.is_some() => {
                break spec.timeout.map(Ending::TimedOut);
            }
            () = &mut stall, if stall_limit.is_some() => {
                break stall_limit.map(Ending::Stalled);
            }
            () = interrupt.triggered() => break Some(Ending::Interrupted),
        }
    };

    let ending = match stop {
        None => {
            // Finished on its own: background jobs it started may keep running (agents start
            // servers that way); they are not ours to kill here.
            // With an exit report (ssh), the local client may still wait for background jobs
            // holding the channel: it is left to them (reaped in the background, its output
            // drained by `finish`), so they can go on writing, as locally.
            process.disarm();
            Ending::Exited(exit_code.unwrap_or(0))
        }
        Some(ending) => {
            stop_group(&mut process, &mut output, &mut stderr, exit_code.is_some()).await;
            ending
        }
    };
    let capture = output.finish(&mut sink);
    let stderr = stderr.map(|pipe| pipe.finish(&mut None));
    Ok(RunOutcome {
        ending,
        capture,
        stderr,
        elapsed: started.elapsed(),
        reported_cwd: None,
    })
}

/// SIGTERM the group, give it `KILL_GRACE` (collecting its last output), SIGKILL the group.
async fn stop_group(
    process: &mut Process<'_>,
    output: &mut OutputPipe,
    stderr: &mut Option<OutputPipe>,
    mut exited: bool,
) {
    process.signal(Signal::SIGTERM);
    let grace_end = tokio::time::Instant::now() + KILL_GRACE;
    while !(exited && all_eof(output, stderr)) {
        tokio::select! {
            read = output.reader.read(&mut output.buffer), if !output.eof => { output.take(read); }
            read = read_optional(stderr) => {
                if let Some(pipe) = stderr.as_mut() {
                    pipe.take(read);
                }
            }
            _ = process.wait(), if !exited => exited = true,
            () = tokio::time::sleep_until(grace_end) => break,
        }
    }
    // Always, even if the shell exited: a child that ignores SIGTERM is still in the group.
    process.signal(Signal::SIGKILL);
    // A remote group is killed through another round trip: done before the call returns.
    process.kill_remote_now().await;
    process.disarm();
    if !exited {
        // Bounded: a sandbox agent that stopped answering must not hang the call.
        let _ = tokio::time::timeout(KILL_GRACE * 2, process.wait()).await;
    }
    let drain_end = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
    output.drain_until(drain_end).await;
    if let Some(pipe) = stderr.as_mut() {
        pipe.drain_until(drain_end).await;
    }
}

pub(crate) fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

fn spawn_error(plan: &SpawnPlan, source: io::Error) -> Error {
    Error::Io {
        context: format!("starting {}", plan.program.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_conventions() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGKILL (9): 128 + 9.
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(9)), 137);
    }
}
