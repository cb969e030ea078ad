//! The crate's error type.

/// An error from the denoiser, boxed so that any model crate's error fits.
pub type DenoiseError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong choosing a schedule or running a sampler.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A scheduler or sampler name that ComfyUI does not have.
    #[error("unknown {kind} `{name}`{}; known: {known}", .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownName {
        /// "scheduler" or "sampler".
        kind: &'static str,
        /// The name given.
        name: String,
        /// The closest known name, if any is close.
        suggestion: Option<&'static str>,
        /// Every known name, comma-separated.
        known: String,
    },
    /// A parameter outside its valid range.
    #[error("invalid {name} {value}: {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A σ schedule a sampler cannot run (too short, not decreasing, negative).
    #[error("invalid σ schedule: {0}")]
    InvalidSchedule(String),
    /// The denoiser failed.
    #[error("denoiser failed at step {step}: {source}")]
    Denoiser {
        /// The step (from 0).
        step: usize,
        /// The denoiser's error.
        source: DenoiseError,
    },
    /// The step callback asked to stop.
    #[error("cancelled before step {step} of {steps}")]
    Cancelled {
        /// The step that was not run (from 0).
        step: usize,
        /// Total steps.
        steps: usize,
    },
}
