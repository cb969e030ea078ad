//! `/metrics` in Prometheus' text format.
//!
//! A handful of counters written by hand: a metrics crate (and its registry and exporter) would
//! be more code than the five series it replaces.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::job::Status;

/// The engine's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    queued: AtomicI64,
    steps: AtomicU64,
    step_micros: AtomicU64,
}

impl Metrics {
    pub(crate) fn queued(&self, delta: i64) {
        self.queued.fetch_add(delta, Ordering::SeqCst);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn step(&self, took: Duration) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, status: Status) {
        let counter = match status {
            Status::Completed => &self.completed,
            Status::Failed => &self.failed,
            Status::Cancelled => &self.cancelled,
            Status::Queued | Status::Running => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::SeqCst).max(0) as usize
    }

    /// The exposition text; `running` is 1 while a job generates.
    pub fn render(&self, running: bool) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP sakiko_jobs_total Jobs finished, by outcome.\n# TYPE sakiko_jobs_total counter"
        );
        for (outcome, counter) in [
            ("completed", &self.completed),
            ("failed", &self.failed),
            ("cancelled", &self.cancelled),
            ("rejected", &self.rejected),
        ] {
            let _ = writeln!(
                out,
                "sakiko_jobs_total{{outcome=\"{outcome}\"}} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sakiko_queue_length Jobs waiting.\n# TYPE sakiko_queue_length gauge\nsakiko_queue_length {}",
            self.queue_len()
        );
        let _ = writeln!(
            out,
            "# HELP sakiko_jobs_running Jobs generating now.\n# TYPE sakiko_jobs_running gauge\nsakiko_jobs_running {}",
            u8::from(running)
        );
        let _ = writeln!(
            out,
            "# HELP sakiko_step_seconds Sampling step latency.\n# TYPE sakiko_step_seconds summary\nsakiko_step_seconds_sum {}\nsakiko_step_seconds_count {}",
            get(&self.step_micros) as f64 / 1e6,
            get(&self.steps)
        );
        out
    }
}
