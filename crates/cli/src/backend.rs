//! `--backend`: which compiled-in Burn backend runs a job.

use burn::tensor::backend::Backend;
use clap::ValueEnum;

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
            other => {
                let name = format!("{other:?}").to_lowercase();
                Err(CliError::Usage(format!(
                    "this `sakiko` was built without the {name} backend; rebuild it with \
                     `cargo install sakiko-cli --features {name}`"
                )))
            }
        }
    }
}
