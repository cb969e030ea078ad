//! The engine: one worker thread per device, each owning that device's resident models, taking
//! jobs from one bounded queue, one at a time each.
//!
//! The HTTP side never touches a tensor: it submits [`Job`](crate::Job)s, watches their [`JobState`](crate::JobState) and sets
//! their cancel flag. A worker checks that flag at every pipeline event, so a running job stops
//! between steps.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use burn::tensor::backend::Backend;
use sakiko_pipeline::{GenerationRequest, ModelFiles, PipelineError, PipelineOptions};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::ApiError;
use crate::job::{ImageOut, Job};
use crate::metrics::Metrics;
use crate::worker::{Worker, build, run};

/// Finished jobs (and their images) kept for clients to fetch; older ones are forgotten.
pub const KEPT_JOBS: usize = 256;

/// What the engine runs on and with, for `/health`, `/v1/models` and the A1111 options.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// `flex`, `wgpu` or `cuda`.
    pub backend: String,
    /// The devices, as the backend names them: one worker each.
    pub devices: Vec<String>,
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

pub(crate) enum Work {
    Job(Arc<Job>),
    /// Switch every worker to another denoiser file (A1111's checkpoint switch).
    Switch(PathBuf, oneshot::Sender<Result<EngineInfo, ApiError>>),
}

/// State shared by the workers and the HTTP handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) jobs: Mutex<Jobs>,
    /// The jobs being generated, oldest first.
    pub(crate) running: Mutex<Vec<Arc<Job>>>,
    pub(crate) info: Mutex<EngineInfo>,
    /// Bumped by every checkpoint switch; a worker whose models are older rebuilds before its
    /// next job.
    pub(crate) generation: AtomicU64,
    pub(crate) metrics: Metrics,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) stopping: AtomicBool,
}

/// Submitted jobs by id, with the order in which finished ones are forgotten.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    pub(crate) by_id: HashMap<String, Arc<Job>>,
    pub(crate) order: VecDeque<String>,
    pub(crate) images: HashMap<String, ImageOut>,
}

impl Jobs {
    pub(crate) fn insert(&mut self, job: Arc<Job>) {
        self.order.push_back(job.id.clone());
        self.by_id.insert(job.id.clone(), job);
        // Forget the oldest finished jobs beyond the limit (queued and running ones stay).
        while self.order.len() > KEPT_JOBS {
            let Some(pos) = self
                .order
                .iter()
                .position(|id| self.by_id.get(id).is_none_or(|j| j.status().is_final()))
            else {
                break;
            };
            if let Some(id) = self.order.remove(pos)
                && let Some(old) = self.by_id.remove(&id)
            {
                for image in &old.state().images {
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

/// The engine: worker threads with the resident models and a bounded job queue.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    queue: Mutex<Option<SyncSender<Work>>>,
    capacity: usize,
    workers: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Builds a pipeline for `files` on each of `devices`, each in its own worker thread
    /// (reading every header, and with `preload` every weight), and starts taking jobs. A
    /// device listed twice gets two workers.
    ///
    /// # Errors
    /// The first device whose pipeline cannot be built (no device at all is a backend error).
    pub fn start<B: Backend>(
        files: ModelFiles,
        devices: impl IntoIterator<Item = B::Device>,
        options: EngineOptions,
    ) -> Result<Arc<Engine>, PipelineError> {
        let backend = sakiko_pipeline::backend_name::<B>;
        let devices: Vec<B::Device> = devices.into_iter().collect();
        if devices.is_empty() {
            return Err(PipelineError::Backend {
                backend: backend(),
                reason: "no device to run on".into(),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(options.queue);
        let rx = Arc::new(Mutex::new(rx));
        let pipeline_options = PipelineOptions {
            keep_in_memory: true,
            ..options.pipeline
        };
        // Each worker reports its build, then waits for the shared state (made once all are
        // up) or for the channel to close (another failed).
        let mut workers = Vec::new();
        let mut built = Vec::new();
        for (i, device) in devices.into_iter().enumerate() {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (shared_tx, shared_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
            let (files, rx, preload) = (files.clone(), Arc::clone(&rx), options.preload);
            let spawned = std::thread::Builder::new()
                .name(format!("sakiko-engine-{i}"))
                .spawn(move || {
                    let result = build::<B>(files, &device, pipeline_options, preload);
                    let pipeline = match result {
                        Ok((pipeline, info)) => {
                            if ready_tx.send(Ok(info)).is_err() {
                                return;
                            }
                            pipeline
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let Ok(shared) = shared_rx.recv() else { return };
                    let worker = Worker::<B> {
                        device,
                        options: pipeline_options,
                        generation: 0,
                    };
                    run(pipeline, worker, &shared, &rx);
                })
                .map_err(|e| PipelineError::Backend {
                    backend: backend(),
                    reason: format!("cannot start an engine thread: {e}"),
                })?;
            workers.push(spawned);
            built.push((ready_rx, shared_tx));
        }
        let mut infos = Vec::new();
        for (ready, _) in &built {
            let info = ready.recv().map_err(|_| PipelineError::Backend {
                backend: backend(),
                reason: "an engine thread stopped while loading".into(),
            });
            // Returning drops every `shared_tx`: the workers that did build exit.
            infos.push(info??);
        }
        let mut info = infos.swap_remove(0);
        info.devices
            .extend(infos.into_iter().flat_map(|i| i.devices));
        let shared = Arc::new(Shared {
            jobs: Mutex::default(),
            running: Mutex::default(),
            info: Mutex::new(info),
            generation: AtomicU64::new(0),
            metrics: Metrics::default(),
            output_dir: options.output_dir,
            stopping: AtomicBool::new(false),
        });
        for (_, shared_tx) in built {
            let _ = shared_tx.send(Arc::clone(&shared));
        }
        Ok(Arc::new(Engine {
            shared,
            queue: Mutex::new(Some(tx)),
            capacity: options.queue,
            workers: Mutex::new(workers),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Queues `request`; a full queue is [`ApiError::queue_full`] (429).
    pub fn submit(&self, request: GenerationRequest) -> Result<Arc<Job>, ApiError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let job = Arc::new(Job::new(format!("job-{created:x}-{n}"), request, created));
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

    /// The job being generated the longest (A1111's single "current" job).
    pub fn current(&self) -> Option<Arc<Job>> {
        lock(&self.shared.running).first().cloned()
    }

    /// The jobs being generated, oldest first (one per busy worker).
    pub fn running(&self) -> Vec<Arc<Job>> {
        lock(&self.shared.running).clone()
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

    /// Switches to the denoiser `dit` after the queued jobs (A1111's checkpoint switch); the
    /// text encoder and VAE stay. The worker that takes the switch checks the file; the others
    /// follow before their next job.
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

    /// Stops taking jobs, cancels the queued and running ones, and waits for the workers to
    /// finish (they stop between steps).
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        lock(&self.queue).take();
        for job in lock(&self.shared.jobs).by_id.values() {
            job.cancel();
        }
        for worker in lock(&self.workers).drain(..) {
            let _ = worker.join();
        }
    }
}
