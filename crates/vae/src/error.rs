//! The crate's error type.

use sakiko_weights::WeightError;

/// What can go wrong loading or running the VAE.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    /// Reading the weights failed (missing or misshapen tensor, truncated file, …).
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The configuration is not a FLUX-style autoencoder this crate can build.
    #[error("unsupported VAE configuration: {0}")]
    Unsupported(String),
    /// The file's shapes fit no FLUX-style autoencoder, so its configuration cannot be read from
    /// them (GroupNorm's group count is in no shape).
    #[error(
        "cannot tell the configuration of the VAE in {}: {found}; pass the model's diffusers \
         config.json (`--vae-config config.json`, or `ModelFiles::with_vae_config`)",
        .path.display()
    )]
    UndetectableConfig {
        /// The weight file.
        path: std::path::PathBuf,
        /// What its shapes say.
        found: String,
    },
    /// An input tensor with the wrong number of channels.
    #[error("{what} has {found} channels, the VAE expects {expected}")]
    Channels {
        /// Which input.
        what: &'static str,
        /// Channels expected.
        expected: usize,
        /// Channels given.
        found: usize,
    },
    /// An image size the encoder cannot take.
    #[error("image size {width}×{height}: {reason}")]
    Size {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Why.
        reason: String,
    },
    /// Invalid tiling parameters.
    #[error("invalid tiling: {0}")]
    Tiling(String),
}
