//! # sakiko-lumina
//!
//! Run the Sakiko-Lumina anime text-to-image model, and the whole Lumina-Image-2.0 / Neta-Lumina
//! family, on [Burn](https://burn.dev), from the weight files people already have.
//!
//! This crate is the facade: it re-exports the workspace crates, so `cargo add sakiko-lumina` is
//! all a user needs. Today it ships the prompt format ([`prompt`]), ComfyUI-exact sampling
//! ([`sampling`]), the Gemma-2 text encoder and tokenizer ([`gemma`]), the NextDiT denoiser
//! ([`nextdit`]), the FLUX autoencoder ([`vae`]) and the weight reader ([`weights`]); the
//! pipeline follows. Backends are cargo features: `flex` (CPU, default), `wgpu`, `cuda`.
//!
//! ```
//! use sakiko_lumina::prompt::{Rating, TagPrompt};
//!
//! let prompt = TagPrompt::builder()
//!     .special("1girl")
//!     .general("blue hair, two side up")
//!     .rating(Rating::General)
//!     .meta(sakiko_lumina::prompt::DEFAULT_META)
//!     .build()?;
//! let model_text = sakiko_lumina::prompt::Prompt::from(prompt).model_text();
//! assert!(model_text.starts_with(sakiko_lumina::prompt::PREFIX));
//! # Ok::<(), sakiko_lumina::prompt::PromptError>(())
//! ```

pub use burn;
pub use sakiko_gemma as gemma;
pub use sakiko_nextdit as nextdit;
pub use sakiko_prompt as prompt;
pub use sakiko_sampling as sampling;
pub use sakiko_vae as vae;
pub use sakiko_weights as weights;

/// The Burn backends compiled into this build, one per enabled cargo feature.
pub mod backend {
    #[cfg(feature = "cuda")]
    pub use burn::backend::Cuda;
    #[cfg(feature = "flex")]
    pub use burn::backend::Flex;
    #[cfg(feature = "wgpu")]
    pub use burn::backend::Wgpu;
}
