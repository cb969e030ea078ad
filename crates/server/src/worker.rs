//! A worker thread: builds its device's pipeline, then takes jobs from the engine's queue and
//! runs them, reporting each step, preview and result into the job's state.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::tensor::backend::Backend;
use image::DynamicImage;
use sakiko_pipeline::{
    Event, ModelFiles, Pipeline, PipelineError, PipelineOptions, encode_png, png_parameters,
};

use crate::ApiError;
use crate::engine::{EngineInfo, Shared, Work, lock};
use crate::job::{ImageOut, Job, Status};

/// What one worker needs besides its pipeline.
pub(crate) struct Worker<B: Backend> {
    pub(crate) device: B::Device,
    pub(crate) options: PipelineOptions,
    /// The models' generation (see [`Shared::generation`]).
    pub(crate) generation: u64,
}

pub(crate) fn build<B: Backend>(
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
        devices: vec![format!("{device:?}")],
        dtype: format!("{:?}", pipeline.dit_dtype()).to_lowercase(),
        dit: files.dit.clone(),
        text_encoder: files.text_encoder.clone(),
        vae: files.vae.clone(),
    };
    Ok((pipeline, info))
}

/// A pipeline for `dit` in place of `pipeline`'s denoiser. Building reads only headers: the new
/// weights load at the next job, after the old models are dropped by the caller.
fn rebuild<B: Backend>(
    pipeline: &Pipeline<B>,
    worker: &Worker<B>,
    dit: PathBuf,
) -> Result<(Pipeline<B>, EngineInfo), PipelineError> {
    let mut files = pipeline.files().clone();
    files.dit = dit;
    build::<B>(files, &worker.device, worker.options, false)
}

/// A worker's loop: jobs in order until the queue closes.
pub(crate) fn run<B: Backend>(
    mut pipeline: Pipeline<B>,
    mut worker: Worker<B>,
    shared: &Shared,
    rx: &Mutex<Receiver<Work>>,
) {
    loop {
        // One worker waits on the queue at a time; the others wait for the lock.
        let Ok(work) = lock(rx).recv() else { return };
        match work {
            Work::Switch(dit, reply) => match rebuild(&pipeline, &worker, dit) {
                Ok((next, info)) => {
                    let mut shared_info = lock(&shared.info);
                    shared_info.dit = info.dit;
                    shared_info.dtype = info.dtype;
                    worker.generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = reply.send(Ok(shared_info.clone()));
                    pipeline = next;
                }
                Err(e) => {
                    let _ = reply.send(Err(ApiError::bad_request(e.to_string())));
                }
            },
            Work::Job(job) => {
                shared.metrics.queued(-1);
                if job.cancelled() {
                    finish(shared, &job, Status::Cancelled, None);
                    continue;
                }
                let generation = shared.generation.load(Ordering::SeqCst);
                if worker.generation != generation {
                    let dit = lock(&shared.info).dit.clone();
                    match rebuild(&pipeline, &worker, dit) {
                        Ok((next, _)) => {
                            pipeline = next;
                            worker.generation = generation;
                        }
                        Err(e) => {
                            finish(shared, &job, Status::Failed, Some(e.into()));
                            continue;
                        }
                    }
                }
                lock(&shared.running).push(Arc::clone(&job));
                run_job(&mut pipeline, shared, &job);
                lock(&shared.running).retain(|j| !Arc::ptr_eq(j, &job));
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

pub(crate) fn finish(shared: &Shared, job: &Job, status: Status, error: Option<ApiError>) {
    shared.metrics.finished(status);
    job.update(|s| {
        s.status = status;
        s.stage = format!("{status:?}").to_lowercase();
        s.seconds = s.started.map(|t| t.elapsed().as_secs_f64());
        s.error = error;
    });
}
