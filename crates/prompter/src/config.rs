//! Qwen3 hyperparameters (Hugging Face `config.json` names) and generation defaults
//! (`generation_config.json`).

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::PrompterError;

/// The hyperparameters of a dense `Qwen3ForCausalLM`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Qwen3Config {
    /// `qwen3`; anything else is refused with [`PrompterError::Architecture`].
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size (151936).
    pub vocab_size: usize,
    /// Model width (1024 for 0.6B).
    pub hidden_size: usize,
    /// MLP width (3072).
    pub intermediate_size: usize,
    /// Decoder layers (28).
    pub num_hidden_layers: usize,
    /// Query heads (16).
    pub num_attention_heads: usize,
    /// Key/value heads (8).
    pub num_key_value_heads: usize,
    /// Head width (128: the query width 2048 differs from the model width). Older configs omit
    /// it, meaning `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon (1e-6).
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (1e6). Read from `rope_theta`, or from `rope_parameters.rope_theta` as
    /// transformers ≥ 5 writes it.
    #[serde(default = "theta")]
    pub rope_theta: f64,
    /// `lm_head` shares the embedding table (true for 0.6B); when the file has no
    /// `lm_head.weight`, the embedding is used either way, as transformers does on load.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// The longest sequence (prompt + generated tokens) RoPE was trained for (40960).
    #[serde(default = "max_positions")]
    pub max_position_embeddings: usize,
    /// Biases on q/k/v/o (Qwen2's layout); refused, since Qwen3 has none.
    #[serde(default)]
    pub attention_bias: bool,
    /// The MLP activation; only `silu` is supported.
    #[serde(default = "silu")]
    pub hidden_act: String,
    /// RoPE scaling (YaRN, …); refused when set.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Sliding-window attention; refused when on.
    #[serde(default)]
    pub use_sliding_window: bool,
}

fn eps() -> f64 {
    1e-6
}
fn theta() -> f64 {
    1e6
}
fn yes() -> bool {
    true
}
fn max_positions() -> usize {
    40960
}
fn silu() -> String {
    "silu".into()
}

impl Qwen3Config {
    /// Qwen3-0.6B, the base of Sakiko-Prompter (`SakikoLab/Sakiko-Prompt-Gen-v1.0`).
    pub fn qwen3_0_6b() -> Self {
        Self {
            model_type: "qwen3".into(),
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            head_dim: Some(128),
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            tie_word_embeddings: true,
            max_position_embeddings: 40960,
            attention_bias: false,
            hidden_act: silu(),
            rope_scaling: None,
            use_sliding_window: false,
        }
    }

    /// A tiny configuration (hidden 64, 2 layers, GQA, vocabulary 512) for benches, doctor
    /// checks and examples with random weights.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 512,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: Some(16),
            max_position_embeddings: 1024,
            ..Self::qwen3_0_6b()
        }
    }

    /// Reads a Hugging Face `config.json` and checks that this crate can run it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PrompterError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PrompterError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PrompterError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        // The architecture first: another model's config may lack Qwen3's fields entirely.
        let model_type = value.get("model_type").and_then(|v| v.as_str());
        if model_type != Some("qwen3") {
            let architectures = value.get("architectures").map(|v| v.to_string());
            return Err(PrompterError::Architecture {
                path: path.to_path_buf(),
                found: model_type
                    .map(str::to_owned)
                    .or(architectures)
                    .unwrap_or_else(|| "no model_type".into()),
            });
        }
        let mut value = value;
        // transformers 5 moved RoPE settings into `rope_parameters`; only plain RoPE is supported.
        if let Some(params) = value
            .get("rope_parameters")
            .cloned()
            .filter(|p| !p.is_null())
        {
            let kind = params.get("rope_type").and_then(|t| t.as_str());
            if kind.is_some_and(|k| k != "default") {
                return Err(PrompterError::Config {
                    path: path.to_path_buf(),
                    reason: format!(
                        "rope_parameters.rope_type {:?} (only plain RoPE is supported)",
                        kind.unwrap_or_default()
                    ),
                });
            }
            if let Some(theta) = params.get("rope_theta") {
                value["rope_theta"] = theta.clone();
            }
        }
        let config: Self = serde_json::from_value(value).map_err(|e| PrompterError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        config.validate().map_err(|reason| PrompterError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// The head width (`head_dim`, or `hidden_size / num_attention_heads` when absent).
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks what this crate supports: no biases, SiLU, no RoPE scaling, no sliding window,
    /// grouped heads that divide evenly, an even head width.
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        if c.attention_bias {
            return Err(
                "attention_bias is true (Qwen2's biased projections); Qwen3 has none".into(),
            );
        }
        if c.hidden_act != "silu" {
            return Err(format!("hidden_act {:?} (only silu)", c.hidden_act));
        }
        if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is set (YaRN and the like are not supported)".into());
        }
        if c.use_sliding_window {
            return Err("use_sliding_window is true (not supported)".into());
        }
        let zero = [
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.max_position_embeddings,
        ]
        .contains(&0);
        if zero || c.head_dim() == 0 {
            return Err("a size is zero".into());
        }
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(format!(
                "{} query heads are not a multiple of {} key/value heads",
                c.num_attention_heads, c.num_key_value_heads
            ));
        }
        if !c.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd (RoPE needs pairs)",
                c.head_dim()
            ));
        }
        Ok(())
    }

    /// Every tensor of a Hugging Face checkpoint with this configuration (`model.` names; no
    /// `lm_head.weight` when tied), with its shape, for synthetic models.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self;
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let mut v = vec![
            (
                "model.embed_tokens.weight".to_owned(),
                vec![c.vocab_size, h],
            ),
            ("model.norm.weight".to_owned(), vec![h]),
        ];
        if !c.tie_word_embeddings {
            v.push(("lm_head.weight".to_owned(), vec![c.vocab_size, h]));
        }
        for n in 0..c.num_hidden_layers {
            let p = format!("model.layers.{n}");
            v.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            v.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            v.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            v.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            v.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
            v.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
            v.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            v.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            v.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
            v.push((format!("{p}.input_layernorm.weight"), vec![h]));
            v.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        }
        v
    }
}

/// The sampling defaults a model folder ships (`generation_config.json`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationConfig {
    /// Whether the model is meant to be sampled (false: greedy).
    #[serde(default)]
    pub do_sample: Option<bool>,
    /// Softmax temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Candidates kept.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Minimum probability relative to the most likely token.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// transformers' repetition penalty (1: none).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Tokens that end generation (one id or a list in the file).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// Most new tokens.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(u32),
        Many(Vec<u32>),
        None(()),
    }
    Ok(match Ids::deserialize(d)? {
        Ids::One(id) => vec![id],
        Ids::Many(ids) => ids,
        Ids::None(()) => Vec::new(),
    })
}

impl GenerationConfig {
    /// Reads `generation_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PrompterError> {
        let path = path.as_ref();
        sakiko_weights::read_config(path).map_err(|e| PrompterError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}
