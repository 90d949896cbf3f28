//! Autoscaling: keeps between `min` and `max` servers, adding servers when acquires have been
//! waiting for a while and retiring servers that have been idle for a while.
//!
//! The decision is a pure function of what the pool looks like (`decide`), tested on its own;
//! `run` applies it on a short period and also replaces lost servers (below `min` is repaired at
//! once, without cooldown). Starts are capped (`max_starting`), so a burst of waiting clients or
//! a lost half of the fleet never turns into a start storm against the scheduler.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Observation;
use crate::pool::Pool;

/// The scaling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscale {
    /// Servers kept at all times (lost ones are replaced at once).
    pub min: usize,
    /// Servers never exceeded.
    pub max: usize,
    /// Slots per server (how many servers a number of waiters needs).
    pub slots_per_server: usize,
    /// Acquires must have been waiting this long without a break before servers are added.
    pub up_after: Duration,
    /// A server idle this long may be retired (never below `min`).
    pub idle_after: Duration,
    /// Time between two voluntary scaling steps, and after a failed start.
    pub cooldown: Duration,
    /// Servers starting at once, at most.
    pub max_starting: usize,
    /// How often the pool is looked at (and servers checked for life).
    pub period: Duration,
}

impl Autoscale {
    /// A fixed size: `servers` servers, no scaling.
    pub fn fixed(servers: usize, slots_per_server: usize) -> Self {
        Self {
            min: servers,
            max: servers,
            slots_per_server,
            up_after: Duration::from_secs(2),
            idle_after: Duration::from_secs(120),
            cooldown: Duration::from_secs(10),
            max_starting: 4,
            period: Duration::from_secs(2),
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Hold,
    /// Start this many servers (`repair`: to get back to `min`, which ignores cooldown).
    Start {
        /// How many.
        count: usize,
        /// Whether this restores `min` rather than answering load.
        repair: bool,
    },
    /// Retire one of these idle servers (oldest first); the scheduler picks which.
    Retire(Vec<String>),
}

/// When the autoscaler last acted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// The last voluntary step (scaling up on load, or retiring).
    pub last_step: Option<Instant>,
    /// The last failed server start.
    pub last_failure: Option<Instant>,
}

/// The scaling decision for `seen` at `now`.
pub fn decide(policy: &Autoscale, seen: &Observation, now: Instant, history: History) -> Decision {
    let live = seen.servers.len() + seen.starting;
    let start_room = policy.max_starting.saturating_sub(seen.starting);
    let recent =
        |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) < policy.cooldown);
    let failing = recent(history.last_failure);
    if live < policy.min {
        // Repairs ignore the cooldown of voluntary steps, but not a failed start, so a broken
        // scheduler is not hammered.
        let count = (policy.min - live).min(start_room);
        return if count == 0 || failing {
            Decision::Hold
        } else {
            Decision::Start {
                count,
                repair: true,
            }
        };
    }
    if failing || recent(history.last_step) {
        return Decision::Hold;
    }
    let sustained = seen
        .waiting_since
        .is_some_and(|since| now.duration_since(since) >= policy.up_after);
    if seen.waiters > 0 {
        if !sustained || live >= policy.max {
            return Decision::Hold;
        }
        // Servers already starting will take some of the waiters.
        let needed = seen
            .waiters
            .div_ceil(policy.slots_per_server.max(1))
            .saturating_sub(seen.starting);
        let count = needed.min(policy.max - live).min(start_room);
        return if count == 0 {
            Decision::Hold
        } else {
            Decision::Start {
                count,
                repair: false,
            }
        };
    }
    if seen.servers.len() <= policy.min || seen.starting > 0 {
        return Decision::Hold;
    }
    let idle: Vec<String> = seen
        .servers
        .iter()
        .filter(|(_, since)| {
            since.is_some_and(|since| now.duration_since(since) >= policy.idle_after)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if idle.is_empty() {
        Decision::Hold
    } else {
        Decision::Retire(idle)
    }
}

/// Runs the policy until the task is aborted: checks servers for life, replaces lost ones,
/// scales up and down.
pub async fn run(pool: Arc<Pool>, policy: Autoscale) {
    let mut history = History::default();
    // One retirement at a time, in the background: a stop may take its grace period, during
    // which life checks and repairs must go on.
    let retiring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut interval = tokio::time::interval(policy.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        pool.check_servers().await;
        while let Ok(at) = failed_rx.try_recv() {
            history.last_failure = Some(at);
        }
        let now = Instant::now();
        match decide(&policy, &pool.observe(), now, history) {
            Decision::Hold => {}
            Decision::Start { count, repair } => {
                tracing::info!(count, repair, "starting servers");
                if !repair {
                    history.last_step = Some(now);
                }
                for _ in 0..count {
                    let pool = Arc::clone(&pool);
                    let failed = failed_tx.clone();
                    // In the background: a slow start must not stall life checks.
                    tokio::spawn(async move {
                        if let Err(error) = pool.add_server().await {
                            tracing::error!(%error, "could not start a server");
                            let _ = failed.send(Instant::now());
                        }
                    });
                }
                // Let the spawned starts register before the next look.
                tokio::task::yield_now().await;
            }
            Decision::Retire(idle) => {
                if retiring.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
                if let Some(id) = pool.pick_retiree(&idle) {
                    history.last_step = Some(now);
                    retiring.store(true, std::sync::atomic::Ordering::Release);
                    let pool = Arc::clone(&pool);
                    let retiring = Arc::clone(&retiring);
                    tokio::spawn(async move {
                        match pool.retire_idle_server(&id).await {
                            Ok(true) => tracing::info!(server = id, "retired an idle server"),
                            Ok(false) => {}
                            // The server is back in the pool; a later look may try again.
                            Err(error) => tracing::warn!(server = id, %error, "retiring failed"),
                        }
                        retiring.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Autoscale {
        Autoscale {
            min: 1,
            max: 4,
            slots_per_server: 2,
            up_after: Duration::from_secs(2),
            idle_after: Duration::from_secs(60),
            cooldown: Duration::from_secs(10),
            max_starting: 2,
            period: Duration::from_millis(500),
        }
    }

    fn servers(now: Instant, idle_for: &[Option<u64>]) -> Vec<(String, Option<Instant>)> {
        idle_for
            .iter()
            .enumerate()
            .map(|(i, idle)| {
                (
                    format!("s{i}"),
                    idle.map(|secs| now - Duration::from_secs(secs)),
                )
            })
            .collect()
    }

    #[test]
    fn below_min_repairs_at_once_within_the_start_cap() {
        let now = Instant::now();
        let mut policy = policy();
        policy.min = 5;
        let seen = Observation {
            servers: servers(now, &[None]),
            ..Observation::default()
        };
        // Cooldown does not delay a repair after a voluntary step...
        let stepped = History {
            last_step: Some(now),
            last_failure: None,
        };
        assert_eq!(
            decide(&policy, &seen, now, stepped),
            Decision::Start {
                count: 2,
                repair: true
            }
        );
        // ...but servers already starting count, and the cap holds.
        let starting = Observation {
            starting: 2,
            ..seen.clone()
        };
        assert_eq!(
            decide(&policy, &starting, now, History::default()),
            Decision::Hold
        );
        // A failed start a moment ago holds repairs back too.
        let failed = History {
            last_step: None,
            last_failure: Some(now),
        };
        assert_eq!(decide(&policy, &seen, now, failed), Decision::Hold);
    }

    #[test]
    fn sustained_waiting_scales_up_to_max_and_brief_waiting_does_not() {
        let now = Instant::now();
        let policy = policy();
        let brief = Observation {
            servers: servers(now, &[None]),
            waiters: 7,
            waiting_since: Some(now - Duration::from_secs(1)),
            ..Observation::default()
        };
        assert_eq!(
            decide(&policy, &brief, now, History::default()),
            Decision::Hold
        );
        let sustained = Observation {
            waiting_since: Some(now - Duration::from_secs(3)),
            ..brief
        };
        // 7 waiters need 4 servers of 2 slots; max 4 leaves 3, the start cap 2.
        assert_eq!(
            decide(&policy, &sustained, now, History::default()),
            Decision::Start {
                count: 2,
                repair: false
            }
        );
        // Within the cooldown of the last step: wait.
        assert_eq!(
            decide(
                &policy,
                &sustained,
                now,
                History {
                    last_step: Some(now - Duration::from_secs(5)),
                    last_failure: None
                }
            ),
            Decision::Hold
        );
        // At max: nothing more.
        let full = Observation {
            servers: servers(now, &[None, None, None, None]),
            ..sustained
        };
        assert_eq!(
            decide(&policy, &full, now, History::default()),
            Decision::Hold
        );
    }

    #[test]
    fn servers_already_starting_count_against_the_waiters() {
        let now = Instant::now();
        let seen = Observation {
            servers: servers(now, &[None]),
            starting: 1,
            waiters: 2,
            waiting_since: Some(now - Duration::from_secs(10)),
        };
        // Two waiters fit on the one server being started.
        assert_eq!(
            decide(&policy(), &seen, now, History::default()),
            Decision::Hold
        );
    }

    #[test]
    fn long_idle_servers_are_offered_for_retirement_but_never_below_min() {
        let now = Instant::now();
        let policy = policy();
        let seen = Observation {
            servers: servers(now, &[Some(600), None, Some(61), Some(5)]),
            ..Observation::default()
        };
        assert_eq!(
            decide(&policy, &seen, now, History::default()),
            Decision::Retire(vec!["s0".to_owned(), "s2".to_owned()])
        );
        let at_min = Observation {
            servers: servers(now, &[Some(600)]),
            ..Observation::default()
        };
        assert_eq!(
            decide(&policy, &at_min, now, History::default()),
            Decision::Hold
        );
        // Waiting clients or a start in progress: no retiring.
        let waiting = Observation {
            waiters: 1,
            waiting_since: Some(now),
            ..seen.clone()
        };
        assert_eq!(
            decide(&policy, &waiting, now, History::default()),
            Decision::Hold
        );
    }
}
