//! The engine: one worker thread that owns the resident models of one device and runs jobs from a
//! bounded queue, one at a time.
//!
//! The HTTP side never touches a tensor: it submits [`Job`]s, watches their [`JobState`] (a
//! `tokio::sync::watch` channel: the latest state, which every handler, poller and event stream
//! reads) and sets their cancel flag. The worker checks that flag at every pipeline event, so a
//! running job stops between steps.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::tensor::backend::Backend;
use image::DynamicImage;
use sakiko_pipeline::{
    Event, GenerationRequest, ModelFiles, Pipeline, PipelineError, PipelineOptions, encode_png,
    png_parameters,
};
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::ApiError;
use crate::metrics::Metrics;

/// Finished jobs (and their images) kept for clients to fetch; older ones are forgotten.
pub const KEPT_JOBS: usize = 256;

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
    /// The current state.
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
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

    fn update(&self, f: impl FnOnce(&mut JobState)) {
        self.state.send_modify(f);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// What the engine runs on and with, for `/health`, `/v1/models` and the A1111 options.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// `flex`, `wgpu` or `cuda`.
    pub backend: String,
    /// The device, as the backend names it.
    pub device: String,
    /// The denoiser's compute dtype.
    pub dtype: String,
    /// The denoiser file.
    pub dit: PathBuf,
    /// The text-encoder file.
    pub text_encoder: PathBuf,
    /// The VAE file.
    pub vae: PathBuf,
}

impl EngineInfo {
    /// The denoiser's file name: the model's name in every API.
    pub fn model_name(&self) -> String {
        sakiko_pipeline::file_name(&self.dit)
    }
}

enum Work {
    Job(Arc<Job>),
    /// Reload with another denoiser file (A1111's checkpoint switch).
    Switch(PathBuf, oneshot::Sender<Result<EngineInfo, ApiError>>),
}

/// State shared by the worker and the HTTP handlers.
#[derive(Debug)]
struct Shared {
    jobs: Mutex<Jobs>,
    current: Mutex<Option<Arc<Job>>>,
    info: Mutex<EngineInfo>,
    metrics: Metrics,
    output_dir: Option<PathBuf>,
    stopping: AtomicBool,
}

/// Submitted jobs by id, with the order in which finished ones are forgotten.
#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<Job>>,
    order: VecDeque<String>,
    images: HashMap<String, ImageOut>,
}

impl Jobs {
    fn insert(&mut self, job: Arc<Job>) {
        self.order.push_back(job.id.clone());
        self.by_id.insert(job.id.clone(), job);
        // Forget the oldest finished jobs beyond the limit (queued and running ones stay).
        while self.order.len() > KEPT_JOBS {
            let Some(pos) = self.order.iter().position(|id| {
                self.by_id
                    .get(id)
                    .is_none_or(|j| j.state.borrow().status.is_final())
            }) else {
                break;
            };
            if let Some(id) = self.order.remove(pos)
                && let Some(old) = self.by_id.remove(&id)
            {
                for image in &old.state.borrow().images {
                    self.images.remove(&image.name);
                }
            }
        }
    }
}

/// Settings of [`Engine::start`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The pipeline's options (`keep_in_memory` is forced on: the point of a server).
    pub pipeline: PipelineOptions,
    /// Jobs that may wait; one more is refused with 429.
    pub queue: usize,
    /// Also write every image here.
    pub output_dir: Option<PathBuf>,
    /// Load every model before the first request (otherwise at the first request).
    pub preload: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            pipeline: PipelineOptions::default(),
            queue: 16,
            output_dir: None,
            preload: false,
        }
    }
}

/// The engine: a worker thread with the resident models and a bounded job queue.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    queue: Mutex<Option<SyncSender<Work>>>,
    capacity: usize,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Builds the pipeline for `files` on `device` in a new worker thread (reading every header,
    /// and with `preload` every weight) and starts taking jobs.
    pub fn start<B: Backend>(
        files: ModelFiles,
        device: B::Device,
        options: EngineOptions,
    ) -> Result<Arc<Engine>, PipelineError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(options.queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let pipeline_options = PipelineOptions {
            keep_in_memory: true,
            ..options.pipeline
        };
        let output_dir = options.output_dir.clone();
        let preload = options.preload;
        let worker = std::thread::Builder::new()
            .name("sakiko-engine".into())
            .spawn(move || {
                let built = build::<B>(files, &device, pipeline_options, preload);
                let pipeline = match built {
                    Ok((pipeline, info)) => {
                        let shared = Arc::new(Shared {
                            jobs: Mutex::default(),
                            current: Mutex::default(),
                            info: Mutex::new(info),
                            metrics: Metrics::default(),
                            output_dir,
                            stopping: AtomicBool::new(false),
                        });
                        if ready_tx.send(Ok(Arc::clone(&shared))).is_err() {
                            return;
                        }
                        (pipeline, shared)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                run(pipeline.0, pipeline.1, rx, &device, pipeline_options);
            })
            .map_err(|e| PipelineError::Backend {
                backend: sakiko_pipeline::backend_name::<B>(),
                reason: format!("cannot start the engine thread: {e}"),
            })?;
        let shared = ready_rx.recv().map_err(|_| PipelineError::Backend {
            backend: sakiko_pipeline::backend_name::<B>(),
            reason: "the engine thread stopped while loading".into(),
        })??;
        Ok(Arc::new(Engine {
            shared,
            queue: Mutex::new(Some(tx)),
            capacity: options.queue,
            worker: Mutex::new(Some(worker)),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Queues `request`; a full queue is [`ApiError::queue_full`] (429).
    pub fn submit(&self, request: GenerationRequest) -> Result<Arc<Job>, ApiError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
        let job = Arc::new(Job {
            id: format!("job-{created:x}-{n}"),
            request,
            created,
            cancel: AtomicBool::new(false),
            state,
        });
        let queue = lock(&self.queue);
        let Some(tx) = queue.as_ref() else {
            return Err(ApiError::unavailable("the server is shutting down"));
        };
        // Registered before it can run, so that a fast worker's updates are never missed.
        lock(&self.shared.jobs).insert(Arc::clone(&job));
        match tx.try_send(Work::Job(Arc::clone(&job))) {
            Ok(()) => {
                self.shared.metrics.queued(1);
                Ok(job)
            }
            Err(e) => {
                lock(&self.shared.jobs).by_id.remove(&job.id);
                Err(match e {
                    TrySendError::Full(_) => {
                        self.shared.metrics.rejected();
                        ApiError::queue_full(self.capacity)
                    }
                    TrySendError::Disconnected(_) => {
                        ApiError::unavailable("the engine has stopped")
                    }
                })
            }
        }
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.shared.jobs).by_id.get(id).cloned()
    }

    /// An image by name.
    pub fn image(&self, name: &str) -> Option<ImageOut> {
        lock(&self.shared.jobs).images.get(name).cloned()
    }

    /// The job being generated.
    pub fn current(&self) -> Option<Arc<Job>> {
        lock(&self.shared.current).clone()
    }

    /// Jobs waiting.
    pub fn queue_len(&self) -> usize {
        self.shared.metrics.queue_len()
    }

    /// How many jobs may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What the engine runs.
    pub fn info(&self) -> EngineInfo {
        lock(&self.shared.info).clone()
    }

    /// The counters of `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Reloads the models with the denoiser `dit` after the queued jobs (A1111's checkpoint
    /// switch); the text encoder and VAE stay.
    pub async fn switch_model(&self, dit: PathBuf) -> Result<EngineInfo, ApiError> {
        let (reply, answer) = oneshot::channel();
        let sent = lock(&self.queue)
            .as_ref()
            .map(|tx| tx.try_send(Work::Switch(dit, reply)));
        match sent {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => return Err(ApiError::queue_full(self.capacity)),
            _ => return Err(ApiError::unavailable("the server is shutting down")),
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the engine has stopped")))
    }

    /// Stops taking jobs, cancels the queued and running ones, and waits for the worker to
    /// finish (it stops between steps).
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        lock(&self.queue).take();
        for job in lock(&self.shared.jobs).by_id.values() {
            job.cancel();
        }
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
    }
}

fn build<B: Backend>(
    files: ModelFiles,
    device: &B::Device,
    options: PipelineOptions,
    preload: bool,
) -> Result<(Pipeline<B>, EngineInfo), PipelineError> {
    let mut pipeline = Pipeline::<B>::builder(files)
        .device(device.clone())
        .options(options)
        .build()?;
    if preload {
        pipeline.preload(|_| std::ops::ControlFlow::Continue(()))?;
    }
    let files = pipeline.files();
    let info = EngineInfo {
        backend: sakiko_pipeline::backend_name::<B>(),
        device: format!("{device:?}"),
        dtype: format!("{:?}", pipeline.dit_dtype()).to_lowercase(),
        dit: files.dit.clone(),
        text_encoder: files.text_encoder.clone(),
        vae: files.vae.clone(),
    };
    Ok((pipeline, info))
}

/// The worker loop: jobs in order until the queue closes.
fn run<B: Backend>(
    mut pipeline: Pipeline<B>,
    shared: Arc<Shared>,
    rx: Receiver<Work>,
    device: &B::Device,
    options: PipelineOptions,
) {
    while let Ok(work) = rx.recv() {
        match work {
            Work::Switch(dit, reply) => {
                let mut files = pipeline.files().clone();
                files.dit = dit;
                // Building reads only headers: the new weights load at the next job, after the
                // old models are dropped here.
                let old = std::mem::replace(&mut pipeline, {
                    match build::<B>(files, device, options, false) {
                        Ok((next, info)) => {
                            *lock(&shared.info) = info.clone();
                            let _ = reply.send(Ok(info));
                            next
                        }
                        Err(e) => {
                            let _ = reply.send(Err(ApiError::bad_request(e.to_string())));
                            continue;
                        }
                    }
                });
                drop(old);
            }
            Work::Job(job) => {
                shared.metrics.queued(-1);
                if job.cancelled() {
                    finish(&shared, &job, Status::Cancelled, None);
                    continue;
                }
                *lock(&shared.current) = Some(Arc::clone(&job));
                run_job(&mut pipeline, &shared, &job);
                *lock(&shared.current) = None;
            }
        }
    }
}

fn run_job<B: Backend>(pipeline: &mut Pipeline<B>, shared: &Shared, job: &Job) {
    let start = Instant::now();
    job.update(|s| {
        s.status = Status::Running;
        s.stage = "starting".into();
        s.started = Some(start);
    });
    let mut last_step = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        pipeline.generate(&job.request, |event| {
            if job.cancelled() || shared.stopping.load(Ordering::SeqCst) {
                return std::ops::ControlFlow::Break(());
            }
            match event {
                Event::Step { step, steps, .. } => {
                    shared.metrics.step(last_step.elapsed());
                    last_step = Instant::now();
                    job.update(|s| {
                        s.step = step + 1;
                        s.steps = *steps;
                        s.stage = event.name();
                    });
                }
                Event::Preview { step, image, .. } => {
                    let image = DynamicImage::ImageRgb8(image.clone());
                    if let Ok(png) = encode_png(&image, &Vec::new()) {
                        job.update(|s| s.preview = Some((*step, Arc::new(png))));
                    }
                }
                Event::Warning(w) => job.update(|s| s.warnings.push(w.clone())),
                Event::Load { .. } | Event::Decode => {
                    if matches!(event, Event::Load { .. }) {
                        last_step = Instant::now();
                    }
                    job.update(|s| s.stage = event.name());
                }
                _ => {}
            }
            std::ops::ControlFlow::Continue(())
        })
    }));
    let generation = match result {
        Ok(Ok(generation)) => generation,
        Ok(Err(PipelineError::Cancelled(_))) => {
            return finish(shared, job, Status::Cancelled, None);
        }
        Ok(Err(e)) => return finish(shared, job, Status::Failed, Some(e.into())),
        Err(panic) => {
            let message = sakiko_pipeline::panic_message(panic.as_ref())
                .unwrap_or_else(|| "unknown panic".into());
            return finish(
                shared,
                job,
                Status::Failed,
                Some(ApiError::internal(format!("the backend failed: {message}"))),
            );
        }
    };
    let mut images = Vec::new();
    for (i, image) in generation.images.iter().enumerate() {
        let parameters = png_parameters(&job.request, pipeline.files(), i);
        let infotext = parameters
            .iter()
            .find(|(k, _)| k == "parameters")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        match encode_png(image, &parameters) {
            Ok(png) => images.push(ImageOut {
                name: format!("{}-{i}.png", job.id),
                png: Arc::new(png),
                infotext,
            }),
            Err(e) => return finish(shared, job, Status::Failed, Some(e.into())),
        }
    }
    if let Some(dir) = &shared.output_dir {
        for image in &images {
            if let Err(e) = std::fs::write(dir.join(&image.name), image.png.as_slice()) {
                tracing::warn!("cannot write {}: {e}", dir.join(&image.name).display());
            }
        }
    }
    {
        let mut jobs = lock(&shared.jobs);
        for image in &images {
            jobs.images.insert(image.name.clone(), image.clone());
        }
    }
    job.update(|s| s.images = images);
    finish(shared, job, Status::Completed, None);
}

fn finish(shared: &Shared, job: &Job, status: Status, error: Option<ApiError>) {
    shared.metrics.finished(status);
    job.update(|s| {
        s.status = status;
        s.stage = format!("{status:?}").to_lowercase();
        s.seconds = s.started.map(|t| t.elapsed().as_secs_f64());
        s.error = error;
    });
}
