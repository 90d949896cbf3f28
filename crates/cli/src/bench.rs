//! `slotbox bench`: performance measured against floors taken in the same run.
//!
//! A ratio to a floor measured seconds earlier on the same machine means something; an absolute
//! number from another machine does not. Each target of the issues is a ratio printed here, and
//! `docs/benchmarks.md` records the figures with the command that produced them.

#![allow(clippy::print_stdout)]

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use clap::Subcommand;
use slotbox_exec::Backend;
use slotbox_exec::BubblewrapConfig;
use slotbox_exec::ExecRequest;
use slotbox_exec::Session;
use slotbox_exec::SessionConfig;
use slotbox_exec::plan::PlanInput;
use slotbox_exec::plan::ShellInvocation;
use slotbox_exec::plan::ShellScript;
use slotbox_exec::plan::SpawnPlan;

use crate::ExitStatus;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Per-call latency of `true` and `echo hi` through a session, local and bwrap, against the
    /// bare `bash -c true` and bare bwrap floors.
    Exec(BenchExecArgs),
    /// The sandbox server over loopback HTTP: sequential v0/v1 latency, 10-slot throughput,
    /// memory with 300 MB of output and with 1000 idle slots.
    Serve(crate::bench_serve::BenchServeArgs),
    /// The slot pool (local scheduler): warm acquire, exec through the pool vs directly, many
    /// clients contending for few slots.
    Pool(crate::bench_pool::BenchPoolArgs),
    /// Concurrent rollouts against the fake model: engine overhead per turn, throughput,
    /// protocol breaches, against the idle model-request and exec floors.
    Rollout(crate::bench_rollout::BenchRolloutArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchExecArgs {
    /// Measured calls per case.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Unmeasured calls per case first (page cache, allocator, CPU frequency).
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    /// Skip the bwrap cases (on a host without bubblewrap).
    #[arg(long)]
    no_bwrap: bool,
    /// Also measure the docker backend with this image, against `docker exec` of `true` in a
    /// container of the same image.
    #[arg(long)]
    docker_image: Option<String>,
    /// Also measure the ssh backend against this host (`[user@]host[:port]`), against `ssh host
    /// true` through a master connection of its own (same options).
    #[arg(long)]
    ssh: Option<String>,
    /// ssh: private key.
    #[arg(long)]
    ssh_key: Option<std::path::PathBuf>,
    /// ssh: known-hosts file.
    #[arg(long)]
    known_hosts: Option<std::path::PathBuf>,
}

pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<ExitStatus> {
    match command {
        BenchCommand::Exec(args) => bench_exec(args).await,
        BenchCommand::Serve(args) => crate::bench_serve::run(args).await,
        BenchCommand::Pool(args) => crate::bench_pool::run(args).await,
        BenchCommand::Rollout(args) => crate::bench_rollout::run(args).await,
    }
}

/// Latency samples of one case.
struct Samples(Vec<Duration>);

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
        sorted.get(rank).copied().unwrap_or_default()
    }
}

/// Runs a plan to completion the plainest way: fork/exec, output to a pipe, wait.
async fn run_bare(plan: &SpawnPlan) -> anyhow::Result<()> {
    // The floor of a sandbox is bwrap itself, without the setsid(1) that slotbox puts in front
    // (which is slotbox's cost).
    let (program, args) = match plan.group {
        slotbox_exec::plan::ProcessGroup::NewSession => (
            std::path::PathBuf::from(plan.args.first().map_or("", String::as_str)),
            plan.args.get(1..).unwrap_or_default(),
        ),
        slotbox_exec::plan::ProcessGroup::New => (plan.program.clone(), plan.args.as_slice()),
    };
    let output = tokio::process::Command::new(&program)
        .args(args)
        .env_clear()
        .envs(&plan.env)
        .current_dir(&plan.cwd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "floor command failed: {:?}",
        output
    );
    Ok(())
}

fn one_shot_true_plan(backend: &Backend, workspace: &std::path::Path) -> anyhow::Result<SpawnPlan> {
    let layout = slotbox_exec::probe::host_layout()?;
    // The same environment a session command gets (a UTF-8 locale makes bash load locale files,
    // which is part of the floor, not of slotbox's overhead).
    let home = backend.workspace_path(workspace)?;
    let env =
        slotbox_exec::EnvPolicy::default().resolve(std::iter::empty(), &[("HOME", home.as_str())]);
    let invocation = ShellInvocation {
        login: false,
        script: ShellScript::OneShot {
            cwd: backend.workspace_path(workspace)?,
            command: "true".to_owned(),
        },
    };
    Ok(backend.plan(&PlanInput {
        layout: &layout,
        workspace,
        session: None,
        env: &env,
        invocation: &invocation,
    })?)
}

async fn bench_exec(args: BenchExecArgs) -> anyhow::Result<ExitStatus> {
    let workspace = tempfile_dir()?;
    let mut backends = vec![Backend::Local];
    if !args.no_bwrap {
        backends.push(Backend::Bubblewrap(BubblewrapConfig::default()));
    }
    println!(
        "slotbox bench exec: {} iterations (+{} warm-up) per case, cases interleaved, {} cores",
        args.iterations,
        args.warmup,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<36} {:>10} {:>10} {:>11}",
        "case", "p50", "p99", "p50/floor"
    );
    let mut missed = Vec::new();
    for backend in backends {
        let floor_plan = one_shot_true_plan(&backend, workspace.path())?;
        let mut config = SessionConfig::new(backend.clone(), workspace.path());
        if backend == Backend::Local {
            // Measure slotbox, not this host's dotfiles: a local session's login snapshot holds
            // whatever ~/.profile defines, and sourcing that each call is the profile's cost. Under
            // bwrap HOME is the (empty) workspace already.
            config.env = config
                .env
                .set("HOME", workspace.path().to_string_lossy().into_owned());
        }
        let one_shot_config = config.clone();
        let mut session = Session::start(config)
            .await
            .with_context(|| format!("starting a {} session", backend.name()))?;
        let requests = [ExecRequest::new("true"), ExecRequest::new("echo hi")];
        // Interleaved rounds: machine noise (frequency, other load) hits every case alike, so the
        // ratios stay meaningful on a busy 2-core VM.
        let mut floor = Samples(Vec::new());
        let mut one_shot = Samples(Vec::new());
        let mut calls = [Samples(Vec::new()), Samples(Vec::new())];
        for round in 0..args.warmup + args.iterations {
            let measured = round >= args.warmup;
            let started = Instant::now();
            run_bare(&floor_plan).await?;
            if measured {
                floor.0.push(started.elapsed());
            }
            let started = Instant::now();
            let result = slotbox_exec::exec_once(&one_shot_config, &requests[0]).await?;
            anyhow::ensure!(result.exit_code == 0, "one-shot true failed: {result:?}");
            if measured {
                one_shot.0.push(started.elapsed());
            }
            for (request, samples) in requests.iter().zip(calls.iter_mut()) {
                let started = Instant::now();
                let result = session.exec(request).await?;
                let elapsed = started.elapsed();
                anyhow::ensure!(
                    result.exit_code == 0,
                    "{} failed: {result:?}",
                    request.command
                );
                if measured {
                    samples.0.push(elapsed);
                }
            }
        }
        let floor_p50 = floor.percentile(50.0);
        let floor_name = match backend {
            Backend::Local => "floor: bare `bash -c true`",
            Backend::Bubblewrap(_) => "floor: bare bwrap argv, `bash -c true`",
            Backend::Docker(_) => "floor: docker exec `true`",
            Backend::Apptainer(_) => "floor: apptainer exec `true`",
            Backend::Ssh(_) => "floor: ssh `true` on the connection",
        };
        print_row(floor_name, &floor, floor_p50);
        print_row(
            &format!("{} one-shot: true", backend.name()),
            &one_shot,
            floor_p50,
        );
        for (request, samples) in requests.iter().zip(calls.iter()) {
            let name = format!("{} session: {}", backend.name(), request.command);
            let ratio = print_row(&name, samples, floor_p50);
            if ratio > 1.5 {
                missed.push(format!(
                    "{name}: p50 {ratio:.2}x the floor (target <= 1.5x)"
                ));
            }
        }
    }
    if let Some(image) = &args.docker_image {
        bench_docker(&args, image, workspace.path(), &mut missed).await?;
    }
    if let Some(target) = &args.ssh {
        bench_ssh(&args, target, &mut missed).await?;
    }
    if missed.is_empty() {
        println!("targets: met (session call p50 <= 1.5x its floor)");
    }
    for miss in &missed {
        println!("target missed: {miss}");
    }
    Ok(ExitStatus::Command(0))
}

/// The ssh backend against `ssh host true` through an open master connection (ControlMaster,
/// the same options), interleaved.
async fn bench_ssh(
    args: &BenchExecArgs,
    target: &str,
    missed: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (user, rest) = match target.split_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, target),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), Some(port.parse::<u16>()?)),
        None => (rest.to_owned(), None),
    };
    let mut config = slotbox_exec::SshConfig::new(host.clone());
    config.user = user.clone();
    config.port = port;
    config.identity = args.ssh_key.clone();
    config.known_hosts = args.known_hosts.clone();
    let scratch = tempfile_dir()?;
    let control = scratch.path().join("floor-control");
    let mut options: Vec<String> = vec![
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-S".into(),
        control.to_string_lossy().into_owned(),
    ];
    if let Some(port) = port {
        options.extend(["-p".into(), port.to_string()]);
    }
    if let Some(key) = &args.ssh_key {
        options.extend(["-i".into(), key.to_string_lossy().into_owned()]);
    }
    if let Some(known) = &args.known_hosts {
        options.extend([
            "-o".into(),
            format!("UserKnownHostsFile={}", known.to_string_lossy()),
        ]);
    }
    let destination = match &user {
        Some(user) => format!("{user}@{host}"),
        None => host.clone(),
    };
    let mut master = tokio::process::Command::new("ssh")
        .args(["-M", "-N"])
        .args(&options)
        .arg(&destination)
        .kill_on_drop(true)
        .spawn()?;
    let mut session = Session::start(SessionConfig::new(Backend::Ssh(config), scratch.path()))
        .await
        .context("starting an ssh session")?;
    let (options, destination) = (&options, &destination);
    let floor = move || async move {
        let status = tokio::process::Command::new("ssh")
            .args(options)
            .arg(destination)
            .arg("true")
            .stdin(std::process::Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "ssh true: {status}");
        Ok(())
    };
    against_floor(
        args,
        &mut session,
        "floor: ssh `true` (open connection)",
        floor,
        missed,
    )
    .await?;
    let _ = master.kill().await;
    Ok(())
}

/// The docker backend against `docker exec` (create, start attached, read to the end, inspect
/// for the exit code: what running a command in a container through the Engine API costs) of
/// `true` in a container of the same image, interleaved.
async fn bench_docker(
    args: &BenchExecArgs,
    image: &str,
    workspace: &std::path::Path,
    missed: &mut Vec<String>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let docker = bollard::Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let floor_container = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(image.to_owned()),
                entrypoint: Some(vec!["sleep".to_owned()]),
                cmd: Some(vec!["infinity".to_owned()]),
                network_disabled: Some(true),
                host_config: Some(bollard::models::HostConfig {
                    auto_remove: Some(true),
                    network_mode: Some("none".to_owned()),
                    init: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .context("creating the floor's container")?
        .id;
    let measured = async {
        docker
            .start_container(
                &floor_container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        let agent = slotbox_exec::AgentCommand {
            program: std::env::current_exe()?,
            args: vec!["__sandbox-agent".to_owned()],
        };
        let backend = Backend::Docker(slotbox_exec::DockerConfig::new(image, agent));
        let mut session = Session::start(SessionConfig::new(backend.clone(), workspace))
            .await
            .context("starting a docker session")?;
        let (docker, floor_container) = (&docker, &floor_container);
        let floor = move || async move {
            let exec = docker
                .create_exec(
                    floor_container,
                    bollard::models::ExecConfig {
                        cmd: Some(vec!["true".to_owned()]),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            if let bollard::exec::StartExecResults::Attached { mut output, .. } =
                docker.start_exec(&exec.id, None).await?
            {
                while output.next().await.is_some() {}
            }
            let code = docker.inspect_exec(&exec.id).await?.exit_code;
            anyhow::ensure!(code == Some(0), "docker exec true: {code:?}");
            Ok(())
        };
        against_floor(
            args,
            &mut session,
            "floor: docker exec `true`",
            floor,
            missed,
        )
        .await
    }
    .await;
    slotbox_exec::backend::docker::force_remove(&docker, &floor_container).await;
    measured
}

/// Interleaved rounds of `floor` and the session calls `true` and `echo hi` (machine noise hits
/// every case alike); prints the rows and records the calls over 1.5x their floor.
async fn against_floor<F, Fut>(
    args: &BenchExecArgs,
    session: &mut Session,
    floor_name: &str,
    mut floor: F,
    missed: &mut Vec<String>,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let requests = [ExecRequest::new("true"), ExecRequest::new("echo hi")];
    let mut floor_samples = Samples(Vec::new());
    let mut calls = [Samples(Vec::new()), Samples(Vec::new())];
    for round in 0..args.warmup + args.iterations {
        let counted = round >= args.warmup;
        let started = Instant::now();
        floor().await?;
        if counted {
            floor_samples.0.push(started.elapsed());
        }
        for (request, samples) in requests.iter().zip(calls.iter_mut()) {
            let started = Instant::now();
            let result = session.exec(request).await?;
            anyhow::ensure!(result.exit_code == 0, "{result:?}");
            if counted {
                samples.0.push(started.elapsed());
            }
        }
    }
    let floor_p50 = floor_samples.percentile(50.0);
    print_row(floor_name, &floor_samples, floor_p50);
    for (request, samples) in requests.iter().zip(calls.iter()) {
        let name = format!("{} session: {}", session.backend().name(), request.command);
        let ratio = print_row(&name, samples, floor_p50);
        if ratio > 1.5 {
            missed.push(format!(
                "{name}: p50 {ratio:.2}x the floor (target <= 1.5x)"
            ));
        }
    }
    Ok(())
}

fn print_row(name: &str, samples: &Samples, floor_p50: Duration) -> f64 {
    let p50 = samples.percentile(50.0);
    let ratio = p50.as_secs_f64() / floor_p50.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "{:<36} {:>8.3}ms {:>8.3}ms {:>10.2}x",
        name,
        p50.as_secs_f64() * 1e3,
        samples.percentile(99.0).as_secs_f64() * 1e3,
        ratio
    );
    ratio
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("slotbox-bench-")
        .tempdir()
        .context("creating a scratch workspace")
}
