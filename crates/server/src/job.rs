//! A job: what a client asked for, its state as a `tokio::sync::watch` channel (the latest
//! state, which every handler, poller and event stream reads) and its cancel flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sakiko_pipeline::GenerationRequest;
use serde::Serialize;
use tokio::sync::watch;

use crate::ApiError;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting in the queue.
    Queued,
    /// Being generated.
    Running,
    /// Done; its images are ready.
    Completed,
    /// Stopped by an error.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl Status {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// One generated image, PNG-encoded with its parameters.
#[derive(Debug, Clone)]
pub struct ImageOut {
    /// Its name under `/api/v1/images/`.
    pub name: String,
    /// The PNG file.
    pub png: Arc<Vec<u8>>,
    /// A1111's infotext (`parameters` chunk).
    pub infotext: String,
}

/// A job's state, as clients see it.
#[derive(Debug, Clone)]
pub struct JobState {
    /// Where it is.
    pub status: Status,
    /// What it is doing (`queued`, `loading the VAE`, `step 3/30`, `decoding`, …).
    pub stage: String,
    /// Steps finished.
    pub step: usize,
    /// Steps in all (0 until sampling starts).
    pub steps: usize,
    /// The latest preview (PNG), with the step it shows.
    pub preview: Option<(usize, Arc<Vec<u8>>)>,
    /// The images, once completed.
    pub images: Vec<ImageOut>,
    /// Prompt and adapter warnings.
    pub warnings: Vec<String>,
    /// Why it failed.
    pub error: Option<ApiError>,
    /// When sampling started (for ETAs).
    pub started: Option<Instant>,
    /// Seconds the job took, once final.
    pub seconds: Option<f64>,
}

/// A submitted generation.
#[derive(Debug)]
pub struct Job {
    /// Its id (`job-…`).
    pub id: String,
    /// What to generate (adapters resolved, seed fixed).
    pub request: GenerationRequest,
    /// Unix time of submission.
    pub created: u64,
    cancel: AtomicBool,
    state: watch::Sender<JobState>,
}

impl Job {
    /// A queued job.
    pub(crate) fn new(id: String, request: GenerationRequest, created: u64) -> Job {
        let (state, _) = watch::channel(JobState {
            status: Status::Queued,
            stage: "queued".into(),
            step: 0,
            steps: request.steps,
            preview: None,
            images: Vec::new(),
            warnings: Vec::new(),
            error: None,
            started: None,
            seconds: None,
        });
        Job {
            id,
            request,
            created,
            cancel: AtomicBool::new(false),
            state,
        }
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
    }

    /// Where the job is, without cloning its state (previews and images).
    pub fn status(&self) -> Status {
        self.state.borrow().status
    }

    /// A receiver that sees every later state (latest wins for slow readers).
    pub fn subscribe(&self) -> watch::Receiver<JobState> {
        self.state.subscribe()
    }

    /// Asks the job to stop: a queued job never runs, a running one stops before its next step.
    /// Returns false when it had already finished.
    pub fn cancel(&self) -> bool {
        self.cancel.store(true, Ordering::SeqCst);
        let mut changed = false;
        self.state.send_if_modified(|s| {
            if s.status == Status::Queued {
                s.status = Status::Cancelled;
                s.stage = "cancelled".into();
                changed = true;
            }
            changed
        });
        changed || !self.state.borrow().status.is_final()
    }

    /// Waits until the job is final and returns its state.
    pub async fn finished(&self) -> JobState {
        let mut rx = self.subscribe();
        // The sender lives as long as the job, so this cannot fail while we hold `self`.
        let state = rx.wait_for(|s| s.status.is_final()).await;
        state.map_or_else(|_| self.state(), |s| s.clone())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut JobState)) {
        self.state.send_modify(f);
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}
