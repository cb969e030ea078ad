//! # sakiko-nextdit
//!
//! The Lumina-Image-2.0 NextDiT (the 2.6B denoiser of Lumina 2, Neta-Lumina and Sakiko-Lumina) as
//! Burn modules generic over the backend, loaded from original / ComfyUI checkpoints (with or
//! without the `model.diffusion_model.` prefix) or diffusers folders, in f32, f16 or bf16.
//!
//! The forward pass follows diffusers' `Lumina2Transformer2DModel`: timestep and caption
//! embedders, an unmodulated context refiner, a modulated noise refiner and main layers with
//! sandwich RMSNorms and tanh gates, joint attention with fused qkv, q/k RMSNorm, grouped-query
//! attention and 3-axis RoPE on adjacent pairs (caption token i at (i, 0, 0), image tokens at
//! (cap_len, row, col)), SwiGLU feed-forward and the final adaptive LayerNorm.

mod config;
mod detect;
mod error;
mod layers;
mod model;

pub use config::NextDitConfig;
pub use error::NextDitError;
pub use layers::Layout;

/// The building blocks of [`NextDit`], for reading its module tree (their parameters are what
/// adapters and quantisation address); they are made by [`NextDitConfig::init`].
pub mod blocks {
    pub use crate::layers::{Attention, Block, FeedForward, RmsNorm, Rope};
}
pub use detect::{Detected, PREFIXES, detect, identify};
pub use model::{NextDit, Trace};
