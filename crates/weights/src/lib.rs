//! # sakiko-weights
//!
//! The one place where sakiko-lumina reads weight files: safetensors files (single, sharded
//! through an index, or in diffusers folders), GGUF files and synthetic checkpoints, behind one
//! [`WeightFile`]. Headers are parsed and checked up front; tensors are read one at a time with
//! positioned reads (a 5 GB checkpoint is never held whole in memory) and converted from their
//! stored type (F32/F16/BF16/F64, fp8 with ComfyUI's per-layer scales, GGUF Q8_0…Q6_K blocks);
//! key prefixes (`vae.`, `model.diffusion_model.`, …) are detected, and every failure names the
//! file, the key and both shapes.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use sakiko_weights::WeightFile;
//!
//! let file = WeightFile::open_any("ae.safetensors")?;
//! let prefix = file.detect_prefix("decoder.conv_in.weight", &["", "vae.", "first_stage_model."])?;
//! let weights = file.scope(prefix);
//! let w = weights.tensor::<Flex, 4>("decoder.conv_in.weight", [512, 16, 3, 3], &Default::default())?;
//! # Ok::<(), sakiko_weights::WeightError>(())
//! ```

mod dtype;
mod edit;
mod embedding;
mod error;
mod file;
mod gguf;
mod load;
mod memory;
mod names;
pub mod quants;
mod safetensors;
mod scope;
mod synthetic;

use std::path::{Path, PathBuf};

pub use dtype::{StoredDtype, decode_f32};
pub use edit::write_edited;
pub use embedding::HostEmbedding;
pub use error::WeightError;
pub use file::{Format, WeightFile};
pub use gguf::MetaValue;
pub use load::{ParamSource, dequantize_kept, load_module};
pub use names::{KeyName, LinearKeys, linear_modules};
pub use quants::GgmlType;
pub use scope::Weights;
pub use synthetic::write_synthetic;

/// Reads a JSON configuration file (diffusers' `config.json`) into `T`.
pub fn read_config<T: serde::de::DeserializeOwned>(
    path: impl AsRef<Path>,
) -> Result<T, WeightError> {
    let path = path.as_ref();
    let error = |reason: String| WeightError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(e.to_string()))
}

/// The files of one model component in a diffusers folder: `config.json` and
/// `diffusion_pytorch_model.safetensors` (or the index of its shards,
/// `diffusion_pytorch_model.safetensors.index.json`), in `dir` itself or in its `subfolder` (as in
/// a pipeline folder: `vae/`, `transformer/`). `None` when `dir` is not a directory. Open the
/// weights with [`WeightFile::open_any`].
pub fn diffusers_component(dir: &Path, subfolder: &str) -> Option<(PathBuf, PathBuf)> {
    if !dir.is_dir() {
        return None;
    }
    let nested = dir.join(subfolder);
    let root = if nested.join("config.json").exists() {
        nested
    } else {
        dir.to_path_buf()
    };
    let single = root.join("diffusion_pytorch_model.safetensors");
    let index = root.join("diffusion_pytorch_model.safetensors.index.json");
    let weights = if !single.exists() && index.exists() {
        index
    } else {
        single
    };
    Some((root.join("config.json"), weights))
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; `None` elsewhere), for the
/// loading and decoding memory figures the examples report.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// What a model checkpoint holds, read from its header alone (no tensor is loaded): the key prefix
/// it was found under, its key naming and its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected<L, C> {
    /// The key prefix (one of the model's known prefixes).
    pub prefix: &'static str,
    /// The key naming.
    pub layout: L,
    /// The configuration, detected from the tensor shapes.
    pub config: C,
}
