//! What can go wrong reading or applying an adapter: each error names the file, and the key and
//! shapes where they apply.

use std::path::PathBuf;

use sakiko_weights::WeightError;

/// An adapter that cannot be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The file could not be read.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// No tensor of the file belongs to an adapter format.
    #[error(
        "{path}: not an adapter: no key ends in a LoRA, LoKr, LoHa, DoRA or diff suffix (first key: `{example}`)"
    )]
    NotAnAdapter {
        /// The file.
        path: PathBuf,
        /// One of its keys.
        example: String,
    },
    /// A module's tensors do not make a complete update.
    #[error("{path}: `{module}`: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The module's name in the file (`lora_unet_layers_0_attention_qkv`).
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// None of the adapter's modules names a layer of the models.
    #[error(
        "{path}: none of its {count} modules matches a layer of the denoiser or the text encoder (first: `{first}`{suggestion})"
    )]
    NoMatch {
        /// The file.
        path: PathBuf,
        /// How many modules it has.
        count: usize,
        /// The first module name.
        first: String,
        /// `; closest layer name: …`, when one is close.
        suggestion: String,
    },
    /// An update has another shape than the layer it names.
    #[error(
        "{path}: `{module}` makes a {found:?} update for `{target}`, whose weight is {expected:?}"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The module's name in the file.
        module: String,
        /// The layer (module path).
        target: String,
        /// The shape of the layer's weight (or of its rows the module covers).
        expected: Vec<usize>,
        /// The shape of the update.
        found: Vec<usize>,
    },
    /// A strength is not a finite number.
    #[error("{path}: strength {value} is not a finite number")]
    Strength {
        /// The file.
        path: PathBuf,
        /// The strength.
        value: f32,
    },
    /// An adapter tag in a prompt cannot be read.
    #[error("prompt tag `{tag}`: {reason}")]
    Tag {
        /// The tag.
        tag: String,
        /// What is wrong.
        reason: String,
    },
    /// An adapter file name given in a prompt or on the command line was not found.
    #[error("no adapter named `{name}` in {dir}{suggestion}")]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
        /// `; did you mean …?`, when one is close.
        suggestion: String,
    },
    /// Several adapter files in the folder have the name asked for.
    #[error("several adapters in {dir} are named `{name}` ({candidates}); give the path of one")]
    Ambiguous {
        /// The name asked for.
        name: String,
        /// The folder.
        dir: PathBuf,
        /// Their paths in the folder, comma-separated.
        candidates: String,
    },
}
