//! The errors of reading weights: each names the file, and the key and shapes where they apply.

use std::path::PathBuf;

use crate::StoredDtype;

/// What can go wrong reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors or GGUF file, or is truncated.
    #[error("{path}: not a valid {format} file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `"safetensors"`, `"GGUF"` or `"checkpoint index"`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("{path}: missing tensor `{key}`")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The full key looked up.
        key: String,
    },
    /// A tensor has another shape than the model expects.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has another number of dimensions than the caller expects.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected} dimensions")]
    Rank {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The rank expected.
        expected: usize,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type that cannot be converted to float.
    #[error("{path}: tensor `{key}` is {dtype}, which cannot be read; supported: {supported}", supported = crate::dtype::supported_names())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// Its stored type.
        dtype: StoredDtype,
    },
    /// An fp8 layer of a scaled-fp8 checkpoint whose scale is missing or unusable.
    #[error("{path}: fp8 tensor `{key}`: {reason}")]
    Scale {
        /// The file.
        path: PathBuf,
        /// The full key of the fp8 weight.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor holds NaN or infinite values: the file is corrupt or was saved from a run that
    /// failed numerically. Found by the value check at load ([`crate::WeightFile::with_value_check`]).
    #[error(
        "{path}: tensor `{key}` holds {count} non-finite values (the first, at index {index}, is \
         {value}); the file is corrupt or was saved from a failed run: use another copy (or load \
         it anyway without the weight check: `sakiko generate --no-weight-check`)"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// How many values are NaN or infinite.
        count: usize,
        /// The first one's flat index.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A tensor holds values beyond the range of the half-precision dtype it is loaded in (they
    /// would become infinite).
    #[error(
        "{path}: tensor `{key}` holds {value}, beyond f16's range (±65504): load this model in \
         bf16 or f32 (`--dtype`)"
    )]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The largest magnitude found.
        value: f32,
    },
    /// A `config.json` could not be read or parsed.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// None of the candidate prefixes leads to a tensor the model needs.
    #[error(
        "{path}: no tensor `{probe}` under any of the prefixes {prefixes:?}; is this the right file?"
    )]
    NoPrefix {
        /// The file.
        path: PathBuf,
        /// The key looked for.
        probe: String,
        /// The prefixes tried.
        prefixes: Vec<String>,
    },
}
