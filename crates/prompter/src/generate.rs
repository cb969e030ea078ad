//! The decoding loop: one prefill, then one cached step per token.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;

use crate::{PrompterError, Qwen3, Sampling};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// The most new tokens.
    pub max_new_tokens: usize,
    /// Tokens that end generation (not included in the output).
    pub stop: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token came.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

/// The generated tokens and how long the two phases took.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// New token ids (without the stop token).
    pub ids: Vec<u32>,
    /// Why it ended.
    pub finish: Finish,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Time of the prefill (prompt through the model, first token chosen).
    pub prefill: Duration,
    /// Time of the cached steps.
    pub decode: Duration,
}

/// Generates after `prompt`: `on_token` sees each new token and may stop generation with
/// `ControlFlow::Break` ([`PrompterError::Cancelled`]).
pub fn generate<B: Backend>(
    model: &Qwen3<B>,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Tokens, PrompterError> {
    options.sampling.validate().map_err(PrompterError::Input)?;
    if prompt.is_empty() {
        return Err(PrompterError::Input("the prompt has no tokens".into()));
    }
    let mut sampler = options.sampling.sampler();
    let mut cache = model.new_cache();
    let mut context = prompt.to_vec();
    let start = Instant::now();
    let mut logits = model.next_logits(prompt, &mut cache)?;
    let mut prefill = None;
    let mut ids = Vec::new();
    let finish = loop {
        if ids.len() == options.max_new_tokens {
            break Finish::Length;
        }
        let id = sampler.next(&logits, &context);
        prefill.get_or_insert_with(|| start.elapsed());
        if options.stop.contains(&id) {
            break Finish::Stop;
        }
        ids.push(id);
        context.push(id);
        if on_token(id).is_break() {
            return Err(PrompterError::Cancelled);
        }
        if ids.len() == options.max_new_tokens {
            break Finish::Length;
        }
        logits = model.next_logits(&[id], &mut cache)?;
    };
    let prefill = prefill.unwrap_or_else(|| start.elapsed());
    Ok(Tokens {
        ids,
        finish,
        prompt_tokens: prompt.len(),
        prefill,
        decode: start.elapsed().saturating_sub(prefill),
    })
}
