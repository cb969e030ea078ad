//! # sakiko-prompter
//!
//! Sakiko-Prompter in process: the Qwen3 decoder it is built on (`Qwen3ForCausalLM`: per-head
//! q/k RMSNorm, RoPE, grouped-query attention, SwiGLU, tied embeddings) as Burn modules generic
//! over the backend, with a key/value cache; the Hugging Face tokenizer and chat template;
//! transformers' sampling; and the step that turns the generated text into a validated
//! Sakiko-Lumina XML tag prompt ([`Prompter::expand`]).
//!
//! ```
//! use burn::backend::Flex;
//! use sakiko_prompter::{GenerateOptions, Qwen3Config, Sampling, generate};
//!
//! // A tiny random model; `Prompter::load` reads a real folder.
//! let model = Qwen3Config::tiny().init::<Flex>(&Default::default());
//! let options = GenerateOptions { sampling: Sampling::greedy(), max_new_tokens: 8, stop: vec![] };
//! let out = generate(&model, &[1, 2, 3], &options, |_| std::ops::ControlFlow::Continue(()))?;
//! assert_eq!(out.ids.len(), 8);
//! # Ok::<(), sakiko_prompter::PrompterError>(())
//! ```

mod config;
mod error;
mod generate;
mod model;
mod prompter;
mod sampling;
mod template;

pub use config::{GenerationConfig, Qwen3Config};
pub use error::PrompterError;
pub use generate::{Finish, GenerateOptions, Tokens, generate};
pub use model::{KvCache, Qwen3};
pub use prompter::{
    DEFAULT_USER_TEMPLATE, ExpandOptions, Expansion, Generated, Prompter, SAKIKO_PROMPTER_REPO,
    load_tokenizer,
};
pub use sampling::{Sampler, Sampling};
pub use template::{ChatTemplate, Message};
