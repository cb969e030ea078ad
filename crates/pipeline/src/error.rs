//! The crate's error type.

use std::path::PathBuf;

use sakiko_gemma::GemmaError;
use sakiko_nextdit::NextDitError;
use sakiko_sampling::SamplingError;
use sakiko_vae::VaeError;
use sakiko_weights::WeightError;

/// Everything that can go wrong finding files, loading models or generating.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A weight file is missing, truncated, or lacks / misshapes a tensor.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The text encoder or tokenizer failed.
    #[error("text encoder: {0}")]
    TextEncoder(#[from] GemmaError),
    /// An adapter cannot be read or does not fit the models.
    #[error("adapter: {0}")]
    Adapter(#[from] sakiko_adapters::AdapterError),
    /// The denoiser failed.
    #[error("denoiser: {0}")]
    Denoiser(#[from] NextDitError),
    /// The autoencoder failed.
    #[error("VAE: {0}")]
    Vae(#[from] VaeError),
    /// A sampling setting is invalid, or the sampler failed.
    #[error(transparent)]
    Sampling(SamplingError),
    /// The prompt is not valid (XML errors, with line and column).
    #[error("invalid prompt:\n{0}")]
    Prompt(String),
    /// A request setting is out of range.
    #[error("invalid {name} {value}: {expected}")]
    Request {
        /// The setting.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A model file could not be found where it was looked for.
    #[error("no {component} found: {detail}")]
    NotFound {
        /// The component looked for.
        component: Component,
        /// Where it was looked for, and what was found instead.
        detail: String,
    },
    /// Several files qualify; the user has to choose.
    #[error("several {component} files in {}: {}; choose one explicitly", .dir.display(), .candidates.join(", "))]
    Ambiguous {
        /// The component.
        component: Component,
        /// The folder searched.
        dir: PathBuf,
        /// The qualifying file names.
        candidates: Vec<String>,
    },
    /// A file holds something other than the component it was given as.
    #[error("{}: expected a {expected} file, but {found}", .path.display())]
    WrongComponent {
        /// The file.
        path: PathBuf,
        /// What it was given as.
        expected: Component,
        /// What it holds instead.
        found: String,
    },
    /// The components do not fit together (e.g. caption width ≠ text-encoder width).
    #[error("the models do not fit together: {0}")]
    Incompatible(String),
    /// The chosen backend cannot run on this machine (no GPU, no Vulkan driver, …).
    #[error("the {backend} backend cannot run here: {reason}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// Why, as the backend reported it.
        reason: String,
    },
    /// Downloading from Hugging Face failed.
    #[error("Hugging Face download failed: {0}")]
    Hub(String),
    /// Reading or writing an image, latent or other output failed.
    #[error("{}: {reason}", .path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A stage produced NaN or infinite values: the generation stops there instead of writing a
    /// black or noisy image.
    #[error(
        "the {stage} produced non-finite values (NaN or infinity){}, computing in {}: {}",
        .step.map(|(s, n)| format!(" at step {} of {n}", s + 1)).unwrap_or_default(),
        dtype_name(*.dtype),
        non_finite_hint(*.dtype)
    )]
    NonFinite {
        /// The stage: `text encoder`, `denoiser`, `VAE encoder` or `VAE decoder`.
        stage: &'static str,
        /// The sampling step (from 0) and the step count, for the denoiser.
        step: Option<(usize, usize)>,
        /// The stage's compute dtype.
        dtype: burn::tensor::FloatDType,
    },
    /// The progress callback asked to stop.
    #[error("cancelled ({0})")]
    Cancelled(String),
}

fn dtype_name(dtype: burn::tensor::FloatDType) -> String {
    format!("{dtype:?}").to_lowercase()
}

fn non_finite_hint(dtype: burn::tensor::FloatDType) -> &'static str {
    if dtype == burn::tensor::FloatDType::F16 {
        "f16 overflowed; try --dtype bf16 or f32"
    } else {
        "the weights may be corrupt (keep the weight check on), or this backend computes wrongly \
         here (run `sakiko doctor`); try --dtype f32 or another backend"
    }
}

/// `Err(NonFinite)` if `x` holds NaN or infinity (one reduction and one scalar read).
pub(crate) fn ensure_finite<B: burn::tensor::backend::Backend, const D: usize>(
    x: &burn::tensor::Tensor<B, D>,
    stage: &'static str,
    step: Option<(usize, usize)>,
    dtype: burn::tensor::FloatDType,
) -> Result<(), PipelineError> {
    use burn::tensor::cast::ToElement;
    if x.clone().is_finite().all().into_scalar().to_bool() {
        Ok(())
    } else {
        Err(PipelineError::NonFinite { stage, step, dtype })
    }
}

impl From<SamplingError> for PipelineError {
    fn from(e: SamplingError) -> Self {
        match e {
            SamplingError::Cancelled { step, steps } => {
                PipelineError::Cancelled(format!("after step {step} of {steps}"))
            }
            other => PipelineError::Sampling(other),
        }
    }
}

/// The three model components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The NextDiT denoiser (`diffusion_models/`).
    Dit,
    /// The Gemma-2 text encoder (`text_encoders/`).
    TextEncoder,
    /// The FLUX autoencoder (`vae/`).
    Vae,
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::Dit => "NextDiT denoiser",
            Component::TextEncoder => "Gemma-2 text encoder",
            Component::Vae => "VAE",
        })
    }
}
