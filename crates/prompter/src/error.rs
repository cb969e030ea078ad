//! What can go wrong loading or running the prompter.

use std::path::PathBuf;

use sakiko_prompt::Diagnostic;
use sakiko_weights::WeightError;

/// Every failure of this crate, with the file or input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PrompterError {
    /// Reading the weights failed (missing or misshapen tensors name the key and both shapes).
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// A file of the model folder is missing or unreadable.
    #[error("cannot read {}: {reason}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A JSON file of the model folder is malformed or describes a model this crate cannot run.
    #[error("{}: {reason}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `config.json` describes another architecture (Qwen2, Gemma, …).
    #[error(
        "{} describes a {found} model; the prompter runs Qwen3 (model_type \"qwen3\", e.g. \
         SakikoLab/Sakiko-Prompt-Gen-v1.0)",
        .path.display()
    )]
    Architecture {
        /// `config.json`.
        path: PathBuf,
        /// Its `model_type` (or `architectures`).
        found: String,
    },
    /// A compute dtype the backend or this crate does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or render.
    #[error("chat template {name}: {reason}")]
    Template {
        /// Which template (`tokenizer_config.json`, `chat_template.jinja`, a file given).
        name: String,
        /// minijinja's message, with the line.
        reason: String,
    },
    /// Inputs that do not fit the model (an empty idea, token ids outside the vocabulary).
    #[error("invalid input: {0}")]
    Input(String),
    /// The prompt and the generated text no longer fit the model's context.
    #[error("the context is full: {needed} tokens needed, the model takes {max}")]
    ContextFull {
        /// Cached plus new tokens.
        needed: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// Generation was cancelled by the caller.
    #[error("generation cancelled")]
    Cancelled,
    /// No attempt produced a valid XML tag prompt.
    #[error(
        "the prompter wrote no valid XML tag prompt in {attempts} attempt(s): {problem}; last \
         output:\n{text}\n{}",
        .diagnostics.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
    )]
    InvalidOutput {
        /// How many generations were tried.
        attempts: usize,
        /// The last generated text (its `<tags>` element, normalised, when it has one).
        text: String,
        /// What was wrong with it.
        problem: String,
        /// What the checker reported on it.
        diagnostics: Vec<Diagnostic>,
    },
}
