//! Gemma-2 hyperparameters (Hugging Face `config.json` names) and encoder options.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::GemmaError;

/// The hyperparameters of a Gemma-2 model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Gemma2Config {
    /// Vocabulary size (256000).
    pub vocab_size: usize,
    /// Model width (2304).
    pub hidden_size: usize,
    /// MLP width (9216).
    pub intermediate_size: usize,
    /// Decoder layers (26).
    pub num_hidden_layers: usize,
    /// Query heads (8).
    pub num_attention_heads: usize,
    /// Key/value heads (4).
    pub num_key_value_heads: usize,
    /// Head dimension (256; the query width 2048 differs from the model width).
    pub head_dim: usize,
    /// RMSNorm epsilon (1e-6).
    pub rms_norm_eps: f64,
    /// RoPE base (10000).
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    /// The attention scale is `query_pre_attn_scalar^-½` (256 → 1/16).
    pub query_pre_attn_scalar: f64,
    /// Window of the sliding-attention layers (every even layer), 4096.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Attention-logit softcap (50).
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
}

fn rope_theta() -> f64 {
    10000.0
}

impl Gemma2Config {
    /// Every tensor of a Hugging Face / ComfyUI Gemma-2 checkpoint (`model.` names, no `lm_head`)
    /// with this configuration, with its shape, for synthetic models
    /// (`sakiko_weights::WeightFile::synthetic`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self;
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let mut v = vec![
            (
                "model.embed_tokens.weight".to_owned(),
                vec![c.vocab_size, h],
            ),
            ("model.norm.weight".to_owned(), vec![h]),
        ];
        for n in 0..c.num_hidden_layers {
            let p = format!("model.layers.{n}");
            v.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            v.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            v.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            v.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            v.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            v.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            v.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
            for norm in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                v.push((format!("{p}.{norm}.weight"), vec![h]));
            }
        }
        v
    }

    /// A test-sized Gemma-2 (vocabulary 1000, width 64, 2 layers, 4 query and 2 KV heads of 16),
    /// for `sakiko bench --preset tiny` and `sakiko doctor`.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 1000,
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            query_pre_attn_scalar: 16.0,
            ..Self::gemma_2_2b()
        }
    }

    /// google/gemma-2-2b, as in `gemma_2_2b_fp16.safetensors`.
    pub fn gemma_2_2b() -> Self {
        Self {
            vocab_size: 256_000,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            query_pre_attn_scalar: 256.0,
            sliding_window: Some(4096),
            attn_logit_softcapping: Some(50.0),
        }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, GemmaError> {
        let config: Self = sakiko_weights::read_config(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<(), GemmaError> {
        let bad = |why: String| Err(GemmaError::Unsupported(why));
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.num_hidden_layers < 2 {
            return bad(
                "the head dimension must be even and there must be at least 2 layers".into(),
            );
        }
        Ok(())
    }
}

/// How the encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EncoderOptions {
    /// Apply the config's attention-logit softcapping (transformers does; ComfyUI does not).
    pub softcap: bool,
    /// Apply the config's sliding window on even layers (transformers does; ComfyUI does not).
    pub sliding_window: bool,
    /// Pad every batch to at least this many tokens (diffusers pads to `max_sequence_length`,
    /// 256); the padding is masked and changes nothing for the real tokens.
    pub pad_to: Option<usize>,
}

impl EncoderOptions {
    /// ComfyUI's behaviour, which the model card targets: neither softcapping nor sliding window.
    pub fn comfyui() -> Self {
        Self::default()
    }

    /// transformers' / diffusers' behaviour: both, as configured, and padding to 256 tokens.
    pub fn transformers() -> Self {
        Self {
            softcap: true,
            sliding_window: true,
            pad_to: Some(256),
        }
    }
}
