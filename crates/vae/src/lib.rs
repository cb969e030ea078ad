//! # sakiko-vae
//!
//! The 16-channel FLUX autoencoder (`ae.safetensors`) that Lumina 2, Neta-Lumina and
//! Sakiko-Lumina decode with, as Burn modules generic over the backend: decoder, encoder (mean of
//! the latent distribution), tiled decoding and encoding for large images, the latent scale and
//! shift ([`LatentFormat`]), and conversion to and from 8-bit RGB exactly as ComfyUI does it.
//!
//! Loads the BFL / ComfyUI key layout (optionally prefixed `vae.` or `first_stage_model.`, as in
//! all-in-one checkpoints) and diffusers' `AutoencoderKL` layout, from f32, f16 or bf16 files.

mod config;
mod error;
mod image;
mod latent;
mod layers;
mod model;
mod tiling;

pub use config::VaeConfig;
pub use error::VaeError;
pub use image::{image_to_tensor, to_rgb8, to_rgb16};
pub use latent::LatentFormat;
pub use layers::{AttnBlock, Layout, ResnetBlock};
pub use model::{Decoder, Detected, Encoder, Level, MidBlock, PREFIXES, Vae, detect, identify};
pub use tiling::Tiling;
