//! NextDiT hyperparameters: diffusers' `config.json`, the 2B preset, detection from a checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::NextDitError;

/// The hyperparameters of `Lumina2Transformer2DModel` (diffusers' `config.json` field names).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NextDitConfig {
    /// Patch side p (2).
    pub patch_size: usize,
    /// Latent channels C (16).
    pub in_channels: usize,
    /// Model width D (2304).
    pub hidden_size: usize,
    /// Joint blocks (26).
    pub num_layers: usize,
    /// Blocks in each of the noise and context refiners (2).
    pub num_refiner_layers: usize,
    /// Query heads (24).
    pub num_attention_heads: usize,
    /// Key/value heads (8).
    pub num_kv_heads: usize,
    /// Feed-forward width rounding (256).
    pub multiple_of: usize,
    /// Feed-forward width multiplier (none: 4·D).
    #[serde(default)]
    pub ffn_dim_multiplier: Option<f64>,
    /// RMSNorm epsilon of the blocks and the caption embedder (1e-5).
    pub norm_eps: f64,
    /// RoPE dimensions per axis (32, 32, 32); they sum to the head dimension.
    pub axes_dim_rope: Vec<usize>,
    /// RoPE table lengths per axis (300, 512, 512) in diffusers, which precomputes its tables; the
    /// angles are computed per position here (as ComfyUI does), so longer captions and larger
    /// latents run too, outside what the model was trained on.
    pub axes_lens: Vec<usize>,
    /// Text feature width (2304 for Gemma-2-2B).
    pub cap_feat_dim: usize,
    /// Epsilon of the per-head q/k RMSNorms. Not in diffusers' `config.json`: diffusers hard-codes
    /// 1e-5 (the default); ComfyUI uses the f32 machine epsilon (`f32::EPSILON`, 1.19e-7). The
    /// difference is far below bf16 precision, but matters for bit-level comparisons.
    #[serde(default = "qk_norm_eps")]
    pub qk_norm_eps: f64,
}

fn qk_norm_eps() -> f64 {
    1e-5
}

impl NextDitConfig {
    /// Every tensor of an original-layout checkpoint (Alpha-VLLM / ComfyUI names, no prefix) with
    /// this configuration, with its shape (`norm_final` included: checkpoints carry it unused),
    /// for synthetic models (`sakiko_weights::WeightFile::synthetic`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self;
        let (d, t, f, hd) = (c.hidden_size, c.adaln_dim(), c.ffn_dim(), c.head_dim());
        let qkv = (c.num_attention_heads + 2 * c.num_kv_heads) * hd;
        let p2c = c.patch_size * c.patch_size * c.in_channels;
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("x_embedder.weight".into(), vec![d, p2c]),
            ("x_embedder.bias".into(), vec![d]),
            ("t_embedder.mlp.0.weight".into(), vec![t, 256]),
            ("t_embedder.mlp.0.bias".into(), vec![t]),
            ("t_embedder.mlp.2.weight".into(), vec![t, t]),
            ("t_embedder.mlp.2.bias".into(), vec![t]),
            ("cap_embedder.0.weight".into(), vec![c.cap_feat_dim]),
            ("cap_embedder.1.weight".into(), vec![d, c.cap_feat_dim]),
            ("cap_embedder.1.bias".into(), vec![d]),
            ("final_layer.adaLN_modulation.1.weight".into(), vec![d, t]),
            ("final_layer.adaLN_modulation.1.bias".into(), vec![d]),
            ("final_layer.linear.weight".into(), vec![p2c, d]),
            ("final_layer.linear.bias".into(), vec![p2c]),
            ("norm_final.weight".into(), vec![d]),
        ];
        let blocks = (0..c.num_refiner_layers)
            .map(|i| (format!("context_refiner.{i}"), false))
            .chain((0..c.num_refiner_layers).map(|i| (format!("noise_refiner.{i}"), true)))
            .chain((0..c.num_layers).map(|i| (format!("layers.{i}"), true)));
        for (b, modulated) in blocks {
            v.push((format!("{b}.attention.qkv.weight"), vec![qkv, d]));
            v.push((format!("{b}.attention.out.weight"), vec![d, d]));
            v.push((format!("{b}.attention.q_norm.weight"), vec![hd]));
            v.push((format!("{b}.attention.k_norm.weight"), vec![hd]));
            v.push((format!("{b}.feed_forward.w1.weight"), vec![f, d]));
            v.push((format!("{b}.feed_forward.w2.weight"), vec![d, f]));
            v.push((format!("{b}.feed_forward.w3.weight"), vec![f, d]));
            for n in [
                "attention_norm1",
                "attention_norm2",
                "ffn_norm1",
                "ffn_norm2",
            ] {
                v.push((format!("{b}.{n}.weight"), vec![d]));
            }
            if modulated {
                v.push((format!("{b}.adaLN_modulation.1.weight"), vec![4 * d, t]));
                v.push((format!("{b}.adaLN_modulation.1.bias"), vec![4 * d]));
            }
        }
        v
    }

    /// A test-sized model with the real one's structure (width 64, 4 query and 2 KV heads,
    /// 2 layers, 1 refiner of each kind, 64-wide captions): milliseconds per step on any machine,
    /// for `sakiko bench --preset tiny` and `sakiko doctor`.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 64,
            num_layers: 2,
            num_refiner_layers: 1,
            num_attention_heads: 4,
            num_kv_heads: 2,
            axes_dim_rope: vec![8, 4, 4],
            cap_feat_dim: 64,
            ..Self::lumina2_2b()
        }
    }

    /// Lumina-Image-2.0 / Neta-Lumina / Sakiko-Lumina (2.6B).
    pub fn lumina2_2b() -> Self {
        Self {
            patch_size: 2,
            in_channels: 16,
            hidden_size: 2304,
            num_layers: 26,
            num_refiner_layers: 2,
            num_attention_heads: 24,
            num_kv_heads: 8,
            multiple_of: 256,
            ffn_dim_multiplier: None,
            norm_eps: 1e-5,
            axes_dim_rope: vec![32, 32, 32],
            axes_lens: vec![300, 512, 512],
            cap_feat_dim: 2304,
            qk_norm_eps: qk_norm_eps(),
        }
    }

    /// Reads a diffusers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, NextDitError> {
        let config: Self = sakiko_weights::read_config(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Head dimension (96 for 2B).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Timestep-embedding and modulation width, `min(D, 1024)`.
    pub fn adaln_dim(&self) -> usize {
        self.hidden_size.min(1024)
    }

    /// Feed-forward inner width: `4·D` (times the multiplier), rounded up to `multiple_of`.
    pub fn ffn_dim(&self) -> usize {
        let base = match self.ffn_dim_multiplier {
            Some(m) => (m * 4.0 * self.hidden_size as f64) as usize,
            None => 4 * self.hidden_size,
        };
        base.div_ceil(self.multiple_of) * self.multiple_of
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<(), NextDitError> {
        let bad = |why: String| Err(NextDitError::Unsupported(why));
        if self.num_attention_heads == 0
            || self.num_kv_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "{} heads do not divide width {}",
                self.num_attention_heads, self.hidden_size
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_attention_heads, self.num_kv_heads
            ));
        }
        if self.axes_dim_rope.len() != 3 || self.axes_lens.len() != 3 {
            return bad("RoPE needs exactly three axes".into());
        }
        if self.axes_dim_rope.iter().sum::<usize>() != self.head_dim()
            || self.axes_dim_rope.iter().any(|d| d % 2 != 0)
        {
            return bad(format!(
                "RoPE axes {:?} must be even and sum to the head dimension {}",
                self.axes_dim_rope,
                self.head_dim()
            ));
        }
        if !(self.qk_norm_eps > 0.0 && self.norm_eps > 0.0) {
            return bad("norm epsilons must be positive".into());
        }
        if self.patch_size == 0 || self.multiple_of == 0 {
            return bad("patch size and multiple_of must be positive".into());
        }
        Ok(())
    }
}
