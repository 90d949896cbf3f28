//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Counters are updated where things happen (the registry); slot gauges are read from the registry
//! at scrape time, so they can never drift from the truth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry as PromRegistry;

/// How a command ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub(crate) outcome: &'static str,
}

/// Slots by state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SlotState {
    pub(crate) state: &'static str,
}

/// Every metric of a server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: PromRegistry,
    pub(crate) commands: Family<Outcome, Counter>,
    pub(crate) command_seconds: Histogram,
    pub(crate) leases_granted: Counter,
    pub(crate) leases_released: Counter,
    pub(crate) leases_expired: Counter,
    pub(crate) lease_waits_timed_out: Counter,
    pub(crate) slots: Family<SlotState, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("slotbox");
        let commands = Family::<Outcome, Counter>::default();
        registry.register(
            "commands",
            "Commands run, by outcome (ok, nonzero, timeout, interrupted, error)",
            commands.clone(),
        );
        // 1 ms to about 9 minutes.
        let command_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "command_duration_seconds",
            "Wall time of commands",
            command_seconds.clone(),
        );
        let leases_granted = Counter::default();
        registry.register("leases_granted", "Leases granted", leases_granted.clone());
        let leases_released = Counter::default();
        registry.register(
            "leases_released",
            "Leases released by their client",
            leases_released.clone(),
        );
        let leases_expired = Counter::default();
        registry.register(
            "leases_expired",
            "Leases that expired unrenewed",
            leases_expired.clone(),
        );
        let lease_waits_timed_out = Counter::default();
        registry.register(
            "lease_waits_timed_out",
            "Lease requests answered no_slot after waiting",
            lease_waits_timed_out.clone(),
        );
        let slots = Family::<SlotState, Gauge>::default();
        registry.register(
            "slots",
            "Slots by state (free, leased, quarantined, executing)",
            slots.clone(),
        );
        Self {
            registry,
            commands,
            command_seconds,
            leases_granted,
            leases_released,
            leases_expired,
            lease_waits_timed_out,
            slots,
        }
    }

    /// Records one finished command.
    pub(crate) fn command(&self, result: &crate::error::Result<slotbox_protocol::ExecResult>) {
        let outcome = match result {
            Ok(result) if result.timed_out => "timeout",
            Ok(result) if result.interrupted => "interrupted",
            Ok(result) if result.exit_code == 0 => "ok",
            Ok(_) => "nonzero",
            Err(_) => "error",
        };
        self.commands.get_or_create(&Outcome { outcome }).inc();
        if let Ok(result) = result {
            self.command_seconds
                .observe(result.duration_ms as f64 / 1000.0);
        }
    }

    /// The text exposition, with slot gauges set from `occupancy` first.
    pub(crate) fn render(
        &self,
        occupancy: &crate::registry::Occupancy,
        executing: usize,
    ) -> String {
        let set = |state: &'static str, value: usize| {
            self.slots
                .get_or_create(&SlotState { state })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("free", occupancy.free);
        set("leased", occupancy.leased);
        set("quarantined", occupancy.quarantined.len());
        set("executing", executing);
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "encoding metrics");
        }
        text
    }
}
