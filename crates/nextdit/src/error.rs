//! The crate's error type.

use sakiko_weights::WeightError;

/// What can go wrong loading or running NextDiT.
#[derive(Debug, thiserror::Error)]
pub enum NextDitError {
    /// Reading the weights failed (missing or misshapen tensor, truncated file, …).
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// A configuration this crate cannot build.
    #[error("unsupported NextDiT configuration: {0}")]
    Unsupported(String),
    /// The file's shapes fit no configuration this crate can detect (the feed-forward width or
    /// the head layout is in no shape it can read).
    #[error(
        "cannot tell the configuration of the NextDiT denoiser in {}: {found}; pass the model's \
         diffusers config.json (`--dit-config config.json`, or `ModelFiles::with_dit_config`)",
        .path.display()
    )]
    UndetectableConfig {
        /// The weight file.
        path: std::path::PathBuf,
        /// What its shapes say.
        found: String,
    },
    /// Inputs that do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
}
