//! # sakiko-gemma
//!
//! The Gemma-2 text encoder that conditions Lumina 2, Neta-Lumina and Sakiko-Lumina, as Burn
//! modules generic over the backend. The conditioning is the hidden state entering the last
//! layer (`hidden_states[-2]`, without the final norm).
//!
//! Defaults follow ComfyUI (what the model card targets): no attention-logit softcapping and no
//! sliding window. [`EncoderOptions::transformers`] turns both on, as transformers runs the model.
//! [`GemmaTokenizer`] reads `tokenizer.json` or the SentencePiece model (file or embedded tensor).

mod config;
mod model;
mod tokenizer;

pub use config::{EncoderOptions, Gemma2Config};
pub use model::{Detected, Gemma2, GemmaError, Hidden, PREFIXES, detect, identify, open_weights};
pub use tokenizer::{BOS, GemmaTokenizer};
