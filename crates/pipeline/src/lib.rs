//! # sakiko-pipeline
//!
//! Text → image with the Sakiko-Lumina / Neta-Lumina / Lumina-Image-2.0 models, on any Burn
//! backend, from the files users have:
//!
//! - [`ModelFiles`]: explicit files, a ComfyUI `models/` folder, an all-in-one checkpoint, a
//!   diffusers folder, or (feature `hub`) a Hugging Face download; [`inspect`] tells what a file
//!   holds from its header;
//! - [`GenerationRequest`]: prompt (the Sakiko prefix is added once), negative prompt, size, steps,
//!   guidance, sampler, scheduler, shift, seed, batch, img2img, adapters ([`AdapterSpec`]: LoRA,
//!   LoKr, LoHa, DoRA from any trainer, merged into resident models and switched per request);
//! - [`Pipeline`]: encode → sample → decode (one call, or each stage on its own on resident
//!   models), memory-lean by default (each model is loaded for its stage and freed after it),
//!   with progress [`Event`]s, previews ([`latent_preview`]), cancellation and an embedding cache;
//! - [`LuminaDenoiser`]: the one place where σ becomes the model's time `1 − σ` and the model's
//!   velocity is negated into an x0 prediction;
//! - [`write_png`] with the parameters as text chunks, [`save_latent`].
//!
//! Generation is deterministic for a seed on a backend: the initial and ancestral noise are
//! PyTorch's CPU `randn` streams (as ComfyUI on a CPU), drawn on the host.

mod backend;
mod cache;
mod denoiser;
pub mod doctor;
mod error;
mod files;
#[cfg(feature = "hub")]
mod hub;
mod memory;
mod output;
mod pipeline;
mod preview;
mod request;
mod text;

pub use backend::{backend_name, check_backend, panic_message};
pub use cache::CACHED_CONDITIONINGS;
pub use denoiser::{Conditioning, LuminaDenoiser};
pub use error::{Component, PipelineError};
pub use files::{Detected, Inspection, ModelFiles, inspect, weight_files};
#[cfg(feature = "hub")]
pub use hub::HubSource;
pub use memory::MemoryEstimate;
pub use output::{
    Parameters, a1111_parameters, encode_png, file_name, png_parameters, read_png_text,
    save_latent, save_tensor, write_png,
};
pub use pipeline::{
    AdapterSpec, Encoded, Event, Generation, Pipeline, PipelineBuilder, PipelineOptions, auto_dtype,
};
pub use preview::latent_preview;
pub use request::{
    GenerationRequest, MAX_BATCH, OutputDepth, SIDE_MULTIPLE, SIDE_RANGE, TRAINED_TOKENS,
};
pub use sakiko_adapters::{AdapterReport, Strength};
/// VAE tiling settings ([`PipelineOptions::vae_tiling`]).
pub use sakiko_vae::Tiling;
pub use text::TextEncoder;
