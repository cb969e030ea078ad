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
    /// Inputs that do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
}
