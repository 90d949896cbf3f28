//! The pool's Prometheus metrics (`GET /metrics`): fleet size and what the autoscaler sees, as
//! gauges read at scrape time, and counters of what happened to leases and servers.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters the pool bumps as things happen.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) leases_granted: Counter,
    pub(crate) leases_lost: Counter,
    pub(crate) servers_started: Counter,
    pub(crate) server_start_failures: Counter,
    pub(crate) servers_lost: Counter,
    pub(crate) servers_retired: Counter,
}

/// A point-in-time view for the gauges.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) servers: usize,
    pub(crate) starting: usize,
    pub(crate) slots: usize,
    pub(crate) free: usize,
    pub(crate) leases: usize,
    pub(crate) waiters: usize,
}

fn gauge(value: usize) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

/// The text exposition of `counters` and `snapshot`.
pub(crate) fn render(counters: &Counters, snapshot: &Snapshot, scheduler: &str) -> String {
    let mut registry = Registry::with_prefix("slotbox_pool");
    let gauges = [
        ("servers", "Live sandbox servers", snapshot.servers),
        (
            "servers_starting",
            "Servers being started",
            snapshot.starting,
        ),
        ("slots", "Slots of live servers", snapshot.slots),
        ("slots_free", "Slots not leased", snapshot.free),
        ("leases", "Leases held through the pool", snapshot.leases),
        ("waiters", "Acquires waiting for a slot", snapshot.waiters),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, gauge(value));
    }
    let counters = [
        ("leases_granted", "Leases granted", &counters.leases_granted),
        (
            "leases_lost",
            "Leases lost with their server",
            &counters.leases_lost,
        ),
        (
            "servers_started",
            "Servers started",
            &counters.servers_started,
        ),
        (
            "server_start_failures",
            "Server starts that failed",
            &counters.server_start_failures,
        ),
        (
            "servers_lost",
            "Servers that died or vanished",
            &counters.servers_lost,
        ),
        (
            "servers_retired",
            "Idle servers retired by scaling down",
            &counters.servers_retired,
        ),
    ];
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
    let info: prometheus_client::metrics::info::Info<Vec<(String, String)>> =
        prometheus_client::metrics::info::Info::new(vec![(
            "scheduler".to_owned(),
            scheduler.to_owned(),
        )]);
    registry.register("scheduler", "The scheduler supplying servers", info);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
