//! # sakiko-lumina
//!
//! Run the Sakiko-Lumina anime text-to-image model, and the whole Lumina-Image-2.0 / Neta-Lumina
//! family, on [Burn](https://burn.dev), from the weight files people already have.
//!
//! This crate is the facade: it re-exports the workspace crates, so `cargo add sakiko-lumina` is
//! all a user needs: text → image ([`pipeline`]: model-file discovery, generation, PNG output),
//! the prompt format ([`prompt`]), ComfyUI-exact sampling ([`sampling`]), the Gemma-2 text
//! encoder and tokenizer ([`gemma`]), Sakiko-Prompter on Qwen3 ([`prompter`]), the NextDiT
//! denoiser ([`nextdit`]), the FLUX autoencoder ([`vae`]), LoRA / LoKr / LoHa / DoRA adapters
//! ([`adapters`]) and the weight reader ([`weights`]). Backends are cargo features: `flex` (CPU,
//! default), `wgpu`, `cuda`; `hub` adds Hugging Face downloads.
//!
//! Generating an image (here with the tiny test models in the repository; point
//! `ModelFiles::models_dir` at a ComfyUI `models/` folder for the real ones):
//!
//! ```
//! use std::ops::ControlFlow;
//! use sakiko_lumina::backend::Flex;
//! use sakiko_lumina::pipeline::{GenerationRequest, ModelFiles, Pipeline};
//!
//! let e2e = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/pipeline/tests/fixtures/e2e");
//! let files = ModelFiles::models_dir(format!("{e2e}/models"))?
//!     .with_text_encoder_config(format!("{e2e}/text_encoder_config.json"))
//!     .with_vae_config(format!("{e2e}/vae_config.json"));
//! let mut pipeline = Pipeline::<Flex>::builder(files).build()?;
//! let request = GenerationRequest::new("1girl, blue hair").size(64, 48).steps(4).seed(42);
//! let result = pipeline.generate(&request, |_event| ControlFlow::Continue(()))?;
//! assert_eq!((result.images[0].width(), result.images[0].height()), (64, 48));
//! # Ok::<(), sakiko_lumina::pipeline::PipelineError>(())
//! ```
//!
//! Building a prompt in the model's XML format:
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
pub use sakiko_adapters as adapters;
pub use sakiko_gemma as gemma;
pub use sakiko_nextdit as nextdit;
pub use sakiko_pipeline as pipeline;
pub use sakiko_prompt as prompt;
pub use sakiko_prompter as prompter;
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
