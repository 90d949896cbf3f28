//! Running a tasks file: many rollouts at once, trajectories written as they finish.
//!
//! Each rollout is its own tokio task (no thread pool: a rollout waiting on its model or its
//! slot costs a few kilobytes, so hundreds run at once on two cores); a semaphore bounds how many
//! are in flight. Cancellation (Ctrl-C) stops new rollouts, makes running ones release their
//! leases and return, and still writes everything that finished.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use slotbox_client::Client;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::ModelClient;
use crate::output::Sink;
use crate::rollout::RolloutSettings;
use crate::rollout::Trajectory;
use crate::rollout::run_rollout;
use crate::summary::Record;
use crate::summary::Summary;
use crate::task::Task;

/// Told about progress (the CLI draws a bar).
pub trait Progress: Send + Sync {
    /// A rollout finished and was written.
    fn finished(&self, trajectory: &Trajectory);
}

/// No progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn finished(&self, _: &Trajectory) {}
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Rollouts in flight at most.
    pub concurrency: usize,
    /// Rollouts per task (an RL group).
    pub samples: u32,
    /// Per-rollout settings.
    pub rollout: RolloutSettings,
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The summary.
    pub summary: Summary,
    /// Whether it was cancelled.
    pub cancelled: bool,
}

/// Runs every task `samples` times against `client` (a pool or sandbox server) and `model`,
/// writing each finished trajectory to `sink`.
pub async fn run(
    client: Client,
    model: ModelClient,
    tasks: Vec<Task>,
    settings: RunSettings,
    sink: &mut Sink,
    progress: &dyn Progress,
    cancel: CancellationToken,
) -> Result<RunReport> {
    let started = Instant::now();
    let total = tasks.len() * settings.samples as usize;
    let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let (sender, mut receiver) = mpsc::channel::<Trajectory>(settings.concurrency.max(1));
    let rollout = Arc::new(settings.rollout);
    let spawner = {
        let cancel = cancel.clone();
        let samples = settings.samples;
        tokio::spawn(async move {
            for task in tasks.into_iter().map(Arc::new) {
                for sample in 0..samples {
                    let permit = tokio::select! {
                        permit = Arc::clone(&semaphore).acquire_owned() => permit,
                        () = cancel.cancelled() => return,
                    };
                    let Ok(permit) = permit else { return };
                    let (client, model, task, rollout, cancel, sender) = (
                        client.clone(),
                        model.clone(),
                        Arc::clone(&task),
                        Arc::clone(&rollout),
                        cancel.clone(),
                        sender.clone(),
                    );
                    tokio::spawn(async move {
                        let run = run_rollout(&client, &model, &task, sample, &rollout, &cancel);
                        // A bug must cost one trajectory, reported as such, not the run or a
                        // silent gap (the lease is released by the rollout's guard).
                        let trajectory = match AssertUnwindSafe(run).catch_unwind().await {
                            Ok(trajectory) => trajectory,
                            Err(panic) => {
                                let what = panic
                                    .downcast_ref::<&str>()
                                    .map(|text| (*text).to_owned())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                tracing::error!(task_id = %task.id, what, "a rollout panicked");
                                let mut trajectory = Trajectory::started(
                                    &task,
                                    sample,
                                    &model.settings().model,
                                    &rollout,
                                );
                                trajectory.error =
                                    Some(format!("internal error: the rollout panicked: {what}"));
                                Some(trajectory)
                            }
                        };
                        drop(permit);
                        // After cancellation only finished rollouts are written.
                        let trajectory = trajectory.filter(|trajectory| {
                            !(cancel.is_cancelled()
                                && trajectory
                                    .error
                                    .as_deref()
                                    .is_some_and(|error| error.starts_with("internal error")))
                        });
                        if let Some(trajectory) = trajectory {
                            let _ = sender.send(trajectory).await;
                        }
                    });
                }
            }
        })
    };
    let mut records = Vec::with_capacity(total);
    let mut failure = None;
    // Ends when the spawner and every rollout have dropped their senders.
    while let Some(trajectory) = receiver.recv().await {
        if failure.is_some() {
            continue;
        }
        records.push(Record::of(&trajectory));
        progress.finished(&trajectory);
        if let Err(error) = sink.write(trajectory) {
            // Nowhere to put results: stop everything, but let rollouts release their slots.
            cancel.cancel();
            failure = Some(error);
        }
    }
    let _ = spawner.await;
    if let Some(error) = failure {
        return Err(error);
    }
    let wall = started.elapsed();
    Ok(RunReport {
        summary: Summary::new(&records, total - records.len(), wall),
        cancelled: cancel.is_cancelled(),
    })
}

/// A default for how long one rollout may take.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(1800);
