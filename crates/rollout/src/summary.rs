//! The end-of-run summary: pass rate, rewards, terminations, tool errors, latencies, throughput.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::agent::Termination;
use crate::rollout::Trajectory;

/// What the summary keeps of one trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    task_id: String,
    reward: Option<f64>,
    termination: Termination,
    turns: u32,
    calls: u64,
    errors: u64,
    /// Calls lenient parsing kept, repaired or re-encoded where strict parsing would not have.
    lenient_repairs: u64,
    completion_tokens: u64,
    turn_ms: Vec<f64>,
    overhead_ms: Vec<f64>,
    model_ms: Vec<f64>,
    tools_ms: Vec<f64>,
}

impl Record {
    /// Keeps what the summary needs.
    pub fn of(trajectory: &Trajectory) -> Self {
        let metrics = &trajectory.metrics;
        let turns = &trajectory.timings.turns;
        Self {
            task_id: trajectory.task_id.clone(),
            reward: trajectory.reward,
            termination: trajectory.termination,
            turns: trajectory.turns,
            calls: metrics.tool_calls_attempted + metrics.unknown_tool,
            errors: metrics.tool_calls_exec_error,
            lenient_repairs: metrics.parse_dropped
                + metrics.parse_recovered_truncated
                + metrics.parse_single_encoded,
            completion_tokens: metrics.completion_tokens,
            turn_ms: turns.iter().map(|t| t.wall_ms).collect(),
            overhead_ms: turns.iter().map(|t| t.overhead_ms()).collect(),
            model_ms: turns.iter().map(|t| t.model_ms).collect(),
            tools_ms: turns.iter().map(|t| t.tools_ms).collect(),
        }
    }
}

/// p50 and p99 of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

fn latency(mut samples: Vec<f64>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
        samples[rank.min(samples.len() - 1)]
    };
    Latency {
        p50_ms: at(50.0),
        p99_ms: at(99.0),
    }
}

/// A run's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Distinct tasks among the trajectories (fewer than trajectories with `--samples`).
    pub tasks: usize,
    /// Trajectories written.
    pub trajectories: usize,
    /// Rollouts not finished (cancelled).
    pub unfinished: usize,
    /// Trajectories with a reward.
    pub rewarded: usize,
    /// Rewarded trajectories with reward ≥ 1.0.
    pub passed: usize,
    /// `passed / rewarded` (0 when none was rewarded).
    pub pass_rate: f64,
    /// Mean reward over rewarded trajectories.
    pub mean_reward: f64,
    /// Count per termination.
    pub terminations: BTreeMap<&'static str, usize>,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Tool calls answered with an error.
    pub tool_errors: u64,
    /// `tool_errors / tool_calls`.
    pub tool_error_rate: f64,
    /// Text tool calls where lenient parsing differed from the reference (dropped malformed
    /// calls, repaired truncated ones, single-encoded strings).
    pub lenient_repairs: u64,
    /// Model turns.
    pub turns: u64,
    /// Whole-turn latency.
    pub turn_latency: Latency,
    /// Model request latency (retries included).
    pub model_latency: Latency,
    /// Tool time per turn.
    pub tools_latency: Latency,
    /// The engine's own time per turn (turn minus model and tools).
    pub engine_overhead: Latency,
    /// Run wall time.
    pub wall_s: f64,
    /// Finished rollouts per hour of wall time.
    pub rollouts_per_hour: f64,
    /// Completion tokens per second of wall time (as servers reported them).
    pub completion_tokens_per_s: f64,
}

impl Summary {
    /// Summarises `records` of a run that took `wall`.
    pub fn new(records: &[Record], unfinished: usize, wall: Duration) -> Self {
        let rewards: Vec<f64> = records.iter().filter_map(|r| r.reward).collect();
        let passed = rewards.iter().filter(|&&reward| reward >= 1.0).count();
        let mut terminations = BTreeMap::new();
        for termination in Termination::ALL {
            terminations.insert(termination.as_str(), 0);
        }
        for record in records {
            *terminations.entry(record.termination.as_str()).or_default() += 1;
        }
        let tool_calls: u64 = records.iter().map(|r| r.calls).sum();
        let tool_errors: u64 = records.iter().map(|r| r.errors).sum();
        let wall_s = wall.as_secs_f64();
        let flat = |pick: fn(&Record) -> &Vec<f64>| -> Vec<f64> {
            records
                .iter()
                .flat_map(|r| pick(r).iter().copied())
                .collect()
        };
        let tasks: std::collections::HashSet<&str> =
            records.iter().map(|r| r.task_id.as_str()).collect();
        Self {
            tasks: tasks.len(),
            trajectories: records.len(),
            unfinished,
            rewarded: rewards.len(),
            passed,
            pass_rate: ratio(passed as f64, rewards.len() as f64),
            mean_reward: ratio(rewards.iter().sum(), rewards.len() as f64),
            terminations,
            tool_calls,
            tool_errors,
            tool_error_rate: ratio(tool_errors as f64, tool_calls as f64),
            lenient_repairs: records.iter().map(|r| r.lenient_repairs).sum(),
            turns: records.iter().map(|r| u64::from(r.turns)).sum(),
            turn_latency: latency(flat(|r| &r.turn_ms)),
            model_latency: latency(flat(|r| &r.model_ms)),
            tools_latency: latency(flat(|r| &r.tools_ms)),
            engine_overhead: latency(flat(|r| &r.overhead_ms)),
            wall_s,
            rollouts_per_hour: ratio(records.len() as f64 * 3600.0, wall_s),
            completion_tokens_per_s: ratio(
                records.iter().map(|r| r.completion_tokens).sum::<u64>() as f64,
                wall_s,
            ),
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<22} {value}");
        };
        row("tasks", self.tasks.to_string());
        row(
            "trajectories",
            format!("{} ({} unfinished)", self.trajectories, self.unfinished),
        );
        row(
            "pass rate",
            format!(
                "{:.1} % ({} of {} rewarded)",
                self.pass_rate * 100.0,
                self.passed,
                self.rewarded
            ),
        );
        row("mean reward", format!("{:.3}", self.mean_reward));
        let terminations: Vec<String> = self
            .terminations
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        row("terminations", terminations.join(", "));
        row(
            "tool calls",
            format!(
                "{} ({} errors, {:.1} %)",
                self.tool_calls,
                self.tool_errors,
                self.tool_error_rate * 100.0
            ),
        );
        if self.lenient_repairs > 0 {
            row(
                "lenient parsing",
                format!("{} calls differ from strict parsing", self.lenient_repairs),
            );
        }
        let show = |latency: Latency| {
            format!("p50 {:.1} ms, p99 {:.1} ms", latency.p50_ms, latency.p99_ms)
        };
        row("turns", self.turns.to_string());
        row("turn latency", show(self.turn_latency));
        row("  model", show(self.model_latency));
        row("  tools", show(self.tools_latency));
        row(
            "  engine overhead",
            format!(
                "p50 {:.3} ms, p99 {:.3} ms",
                self.engine_overhead.p50_ms, self.engine_overhead.p99_ms
            ),
        );
        row(
            "throughput",
            format!(
                "{:.0} rollouts/hour over {:.1} s, {:.0} completion tokens/s",
                self.rollouts_per_hour, self.wall_s, self.completion_tokens_per_s
            ),
        );
        out
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reward: Option<f64>, termination: Termination, turns: &[f64]) -> Record {
        Record {
            // Records with as many turns count as samples of one task.
            task_id: format!("task-{}", turns.len()),
            reward,
            termination,
            turns: turns.len() as u32,
            calls: 4,
            errors: 1,
            lenient_repairs: 1,
            completion_tokens: 10,
            turn_ms: turns.to_vec(),
            overhead_ms: turns.iter().map(|t| t / 10.0).collect(),
            model_ms: turns.to_vec(),
            tools_ms: vec![0.0; turns.len()],
        }
    }

    #[test]
    fn counts_rates_and_percentiles() {
        let records = vec![
            record(Some(1.0), Termination::Stop, &[10.0, 20.0]),
            record(Some(0.0), Termination::MaxTurns, &[30.0]),
            record(Some(0.5), Termination::Stop, &[40.0]),
            record(None, Termination::ApiError, &[]),
        ];
        let summary = Summary::new(&records, 2, Duration::from_secs(36));
        assert_eq!(summary.trajectories, 4);
        assert_eq!(summary.tasks, 3);
        assert_eq!(summary.lenient_repairs, 4);
        assert_eq!(summary.rewarded, 3);
        assert_eq!(summary.passed, 1);
        assert!((summary.pass_rate - 1.0 / 3.0).abs() < 1e-9);
        assert!((summary.mean_reward - 0.5).abs() < 1e-9);
        assert_eq!(summary.terminations["stop"], 2);
        assert_eq!(summary.terminations["timeout"], 0);
        assert_eq!(summary.tool_calls, 16);
        assert!((summary.tool_error_rate - 0.25).abs() < 1e-9);
        assert_eq!(summary.turn_latency.p50_ms, 30.0);
        assert_eq!(summary.turn_latency.p99_ms, 40.0);
        assert!((summary.rollouts_per_hour - 400.0).abs() < 1e-9);
        let table = summary.table();
        assert!(table.contains("33.3 % (1 of 3 rewarded)"), "{table}");
        assert!(table.contains("tasks                  3\n"), "{table}");
        assert!(table.contains("4 calls differ from strict"), "{table}");
        assert!(
            table.contains("api_error 1, max_turns 1, stop 2"),
            "{table}"
        );
    }
}
