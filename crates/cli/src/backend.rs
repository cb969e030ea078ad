//! `--backend`: which compiled-in Burn backend runs a job.

use burn::tensor::backend::Backend;
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use sakiko_pipeline::PipelineError;
use serde::Serialize;

use crate::CliError;

/// The backends `--backend` accepts (each must be compiled in with its cargo feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Pure-Rust CPU backend (feature `flex`, the default).
    Flex,
    /// Vulkan / Metal / DX12 through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs (feature `cuda`).
    Cuda,
}

/// Work that runs on any backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs on `B` and `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output, CliError>;
}

/// [`sakiko_pipeline::check_backend`] with the process's panic output silenced and recorded: the
/// binary owns the process and probes before starting threads of its own, so it may swap the
/// hook for the probe. Backends start devices on worker threads whose panic messages say what is
/// missing (no Vulkan adapter, no CUDA driver) while the caller only sees a closed channel; the
/// first recorded message becomes the error's reason and no backtrace reaches the user.
pub fn probe<B: Backend>(device: &B::Device) -> Result<(), CliError> {
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = Arc::clone(&messages);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = sakiko_pipeline::panic_message(info.payload());
        if let (Ok(mut m), Some(text)) = (record.lock(), text) {
            m.push(text);
        }
    }));
    let result = sakiko_pipeline::check_backend::<B>(device);
    std::panic::set_hook(hook);
    match result {
        Err(PipelineError::Backend { backend, reason }) => {
            let first = messages.lock().ok().and_then(|m| m.first().cloned());
            Err(PipelineError::Backend {
                backend,
                reason: first.unwrap_or(reason),
            }
            .into())
        }
        other => Ok(other?),
    }
}

/// The first backend this binary has (Flex, then wgpu, then CUDA), for jobs that only need a
/// backend type (listing a model's layers).
pub fn first_compiled() -> BackendChoice {
    if cfg!(feature = "flex") {
        BackendChoice::Flex
    } else if cfg!(feature = "wgpu") {
        BackendChoice::Wgpu
    } else {
        BackendChoice::Cuda
    }
}

impl BackendChoice {
    /// Runs `job` on this backend, or explains which feature the binary lacks.
    pub fn run<J: Job>(self, job: J) -> Result<J::Output, CliError> {
        match self {
            #[cfg(feature = "flex")]
            BackendChoice::Flex => job.run::<burn::backend::Flex>(Default::default()),
            #[cfg(feature = "wgpu")]
            BackendChoice::Wgpu => job.run::<burn::backend::Wgpu>(Default::default()),
            #[cfg(feature = "cuda")]
            BackendChoice::Cuda => job.run::<burn::backend::Cuda>(Default::default()),
            #[allow(unreachable_patterns)]
            other => Err(other.not_compiled()),
        }
    }

    /// The error for a backend this binary was built without.
    pub fn not_compiled(self) -> CliError {
        let name = format!("{self:?}").to_lowercase();
        CliError::Usage(format!(
            "this `sakiko` was built without the {name} backend; rebuild it with \
             `cargo install sakiko-cli --features {name}`"
        ))
    }
}

/// The backend settings that ran.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// CPU threads (Flex's rayon pool; `RAYON_NUM_THREADS` or every core).
    pub threads: usize,
    /// Flex: rayon + SIMD; CUDA / wgpu: autotune and fusion.
    pub features: Vec<&'static str>,
}

/// The settings of backend `B` in this build.
pub fn settings<B: Backend>() -> Settings {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let features = match sakiko_pipeline::backend_name::<B>().as_str() {
        "flex" => vec!["rayon", "simd"],
        _ => vec!["autotune", "fusion"],
    };
    Settings { threads, features }
}

/// The GPU wgpu picks by default (Burn's default device asks for the high-performance one), with
/// its driver, as wgpu reports it.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapter() -> Option<String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    let adapter = futures_lite::future::block_on(instance.request_adapter(&options)).ok()?;
    let info = adapter.get_info();
    Some(format!(
        "{} ({:?}, {:?}; driver: {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    ))
}

/// The first NVIDIA GPU's model and the driver version, as the Linux driver reports them under
/// `/proc/driver/nvidia` (CUDA itself names neither through Burn). Only `doctor` (which needs
/// Flex for its reference) asks.
#[cfg(all(feature = "cuda", feature = "flex"))]
pub fn cuda_adapter() -> Option<String> {
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    let mut dirs: Vec<_> = gpus.filter_map(Result::ok).map(|e| e.path()).collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.first()?.join("information")).ok()?;
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("Model:"))?
        .trim()
        .to_owned();
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|v| v.lines().next().map(str::to_owned));
    Some(match driver {
        Some(d) => format!("{model} (driver: {})", d.trim()),
        None => model,
    })
}
