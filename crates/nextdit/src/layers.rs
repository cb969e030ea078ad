//! Blocks of the NextDiT, loaded from either key layout.
//!
//! Internal names are the original / ComfyUI ones (`layers.3.attention.qkv`); for diffusers
//! checkpoints [`Layout::Diffusers`] translates them and concatenates `to_q`, `to_k`, `to_v` into qkv.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
pub use sakiko_ops::RmsNorm;
use sakiko_ops::{clamp_fp16, swiglu};

use crate::NextDitConfig;

/// The key naming of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Original Alpha-VLLM / ComfyUI names (`layers.0.attention.qkv.weight`).
    Original,
    /// diffusers `Lumina2Transformer2DModel` names (`layers.0.attn.to_q.weight`).
    Diffusers,
}

impl Layout {
    /// The key of original-named `name` in this layout (for everything but the fused qkv).
    pub fn key(self, name: &str) -> String {
        if self == Layout::Original {
            return name.to_owned();
        }
        let mut k = name.to_owned();
        let context = k.starts_with("context_refiner.");
        for (from, to) in [
            ("cap_embedder.", "time_caption_embed.caption_embedder."),
            (
                "t_embedder.mlp.0.",
                "time_caption_embed.timestep_embedder.linear_1.",
            ),
            (
                "t_embedder.mlp.2.",
                "time_caption_embed.timestep_embedder.linear_2.",
            ),
            ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
            ("final_layer.linear.", "norm_out.linear_2."),
            (".attention.out.", ".attn.to_out.0."),
            (".attention.q_norm.", ".attn.norm_q."),
            (".attention.k_norm.", ".attn.norm_k."),
            (".feed_forward.w1.", ".feed_forward.linear_1."),
            (".feed_forward.w2.", ".feed_forward.linear_2."),
            (".feed_forward.w3.", ".feed_forward.linear_3."),
            (".adaLN_modulation.1.", ".norm1.linear."),
            (".attention_norm2.", ".norm2."),
        ] {
            k = k.replace(from, to);
        }
        // The unmodulated context refiner has a plain `norm1`; modulated blocks nest it.
        k.replace(
            ".attention_norm1.",
            if context { ".norm1." } else { ".norm1.norm." },
        )
    }
}

/// A linear layer `d_in → d_out` (weights `[in, out]`, filled by loading).
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// Rotary embedding tables for a batch of sequences: `cos`/`sin` shaped `[B, S, 1, head_dim/2]`.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub(crate) cos: Tensor<B, 4>,
    pub(crate) sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// Rotates adjacent pairs `(x[2k], x[2k+1])` of `x` `[B, S, H, hd]` by the table's angles.
    fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        sakiko_ops::rope_pairs(x, &self.cos, &self.sin)
    }
}

/// Joint self-attention: fused qkv, per-head q/k RMSNorm, RoPE, grouped-query attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    qkv: Linear<B>,
    out: Linear<B>,
    q_norm: RmsNorm<B>,
    k_norm: RmsNorm<B>,
    heads: usize,
    kv_heads: usize,
}

impl<B: Backend> Attention<B> {
    pub(crate) fn init(c: &NextDitConfig, device: &B::Device) -> Self {
        let (d, heads, kv_heads) = (c.hidden_size, c.num_attention_heads, c.num_kv_heads);
        let hd = c.head_dim();
        Self {
            qkv: linear(d, (heads + 2 * kv_heads) * hd, false, device),
            out: linear(heads * hd, d, false, device),
            q_norm: RmsNorm::init(hd, c.qk_norm_eps, device),
            k_norm: RmsNorm::init(hd, c.qk_norm_eps, device),
            heads,
            kv_heads,
        }
    }

    /// Self-attention over `x` whose sample `b` has `seq_lens[b]` valid tokens (the rest is
    /// padding, ignored as keys; `None`: all valid).
    ///
    /// # Shapes
    /// `x`: `[B, S, D]` → `[B, S, D]`; `rope` tables `[B, S, 1, head_dim/2]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        seq_lens: Option<&[usize]>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kv) = (self.heads, self.kv_heads);
        let qkv = sakiko_ops::linear(&self.qkv, x);
        let hd = qkv.dims()[2] / (h + 2 * kv);
        let q = self
            .q_norm
            .forward(qkv.clone().narrow(2, 0, h * hd).reshape([b, s, h, hd]));
        let k = self.k_norm.forward(
            qkv.clone()
                .narrow(2, h * hd, kv * hd)
                .reshape([b, s, kv, hd]),
        );
        let v = qkv
            .narrow(2, (h + kv) * hd, kv * hd)
            .reshape([b, s, kv, hd]);
        // Heads first; each KV head serves `h / kv` consecutive query heads, without K/V copies.
        let o = sakiko_ops::attention(
            rope.apply(q).swap_dims(1, 2),
            rope.apply(k).swap_dims(1, 2),
            v.swap_dims(1, 2),
            seq_lens,
        );
        sakiko_ops::linear(&self.out, o.swap_dims(1, 2).reshape([b, s, h * hd]))
    }
}

/// SwiGLU: `w2(silu(w1 x) · w3 x)`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    w1: Linear<B>,
    w2: Linear<B>,
    w3: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        sakiko_ops::linear(
            &self.w2,
            swiglu(
                sakiko_ops::linear(&self.w1, x.clone()),
                sakiko_ops::linear(&self.w3, x),
            ),
        )
    }
}

/// A transformer block with sandwich norms; modulated (`adaLN_modulation`) in the noise refiner
/// and the main layers, plain in the context refiner.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    attention: Attention<B>,
    feed_forward: FeedForward<B>,
    attention_norm1: RmsNorm<B>,
    attention_norm2: RmsNorm<B>,
    ffn_norm1: RmsNorm<B>,
    ffn_norm2: RmsNorm<B>,
    ada_ln_modulation: Option<Linear<B>>,
}

impl<B: Backend> Block<B> {
    pub(crate) fn init(c: &NextDitConfig, modulated: bool, device: &B::Device) -> Self {
        let (d, f, eps) = (c.hidden_size, c.ffn_dim(), c.norm_eps);
        Self {
            attention: Attention::init(c, device),
            feed_forward: FeedForward {
                w1: linear(d, f, false, device),
                w2: linear(f, d, false, device),
                w3: linear(d, f, false, device),
            },
            attention_norm1: RmsNorm::init(d, eps, device),
            attention_norm2: RmsNorm::init(d, eps, device),
            ffn_norm1: RmsNorm::init(d, eps, device),
            ffn_norm2: RmsNorm::init(d, eps, device),
            ada_ln_modulation: modulated.then(|| linear(c.adaln_dim(), 4 * d, true, device)),
        }
    }

    /// `silu_temb`: `silu(timestep embedding)` `[B, T]`, required by modulated blocks;
    /// `seq_lens` as in [`Attention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        seq_lens: Option<&[usize]>,
        silu_temb: &Tensor<B, 2>,
    ) -> Tensor<B, 3> {
        match &self.ada_ln_modulation {
            Some(ada) => {
                // Chunk order: scale_msa, gate_msa, scale_mlp, gate_mlp.
                let e: Tensor<B, 3> = sakiko_ops::linear(ada, silu_temb.clone()).unsqueeze_dim(1);
                let d = e.dims()[2] / 4;
                let chunk = |i: usize| e.clone().narrow(2, i * d, d);
                let a = self.attention.forward(
                    self.attention_norm1
                        .forward_scaled(x.clone(), chunk(0).add_scalar(1.0)),
                    rope,
                    seq_lens,
                );
                let x =
                    self.attention_norm2
                        .forward_residual(x, clamp_fp16(a), Some(chunk(1).tanh()));
                let f = self.feed_forward.forward(
                    self.ffn_norm1
                        .forward_scaled(x.clone(), chunk(2).add_scalar(1.0)),
                );
                self.ffn_norm2
                    .forward_residual(x, clamp_fp16(f), Some(chunk(3).tanh()))
            }
            None => {
                let a =
                    self.attention
                        .forward(self.attention_norm1.forward(x.clone()), rope, seq_lens);
                let x = self
                    .attention_norm2
                    .forward_residual(x, clamp_fp16(a), None);
                let f = self.feed_forward.forward(self.ffn_norm1.forward(x.clone()));
                self.ffn_norm2.forward_residual(x, clamp_fp16(f), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_to_diffusers_names() {
        let cases = [
            ("x_embedder.weight", "x_embedder.weight"),
            (
                "t_embedder.mlp.0.bias",
                "time_caption_embed.timestep_embedder.linear_1.bias",
            ),
            (
                "t_embedder.mlp.2.weight",
                "time_caption_embed.timestep_embedder.linear_2.weight",
            ),
            (
                "cap_embedder.0.weight",
                "time_caption_embed.caption_embedder.0.weight",
            ),
            (
                "cap_embedder.1.bias",
                "time_caption_embed.caption_embedder.1.bias",
            ),
            (
                "layers.3.attention.out.weight",
                "layers.3.attn.to_out.0.weight",
            ),
            (
                "layers.3.attention.q_norm.weight",
                "layers.3.attn.norm_q.weight",
            ),
            (
                "noise_refiner.1.attention.k_norm.weight",
                "noise_refiner.1.attn.norm_k.weight",
            ),
            (
                "layers.0.feed_forward.w2.weight",
                "layers.0.feed_forward.linear_2.weight",
            ),
            (
                "layers.0.adaLN_modulation.1.weight",
                "layers.0.norm1.linear.weight",
            ),
            (
                "layers.0.attention_norm1.weight",
                "layers.0.norm1.norm.weight",
            ),
            (
                "context_refiner.1.attention_norm1.weight",
                "context_refiner.1.norm1.weight",
            ),
            (
                "context_refiner.0.attention_norm2.weight",
                "context_refiner.0.norm2.weight",
            ),
            ("layers.7.ffn_norm2.weight", "layers.7.ffn_norm2.weight"),
            (
                "final_layer.adaLN_modulation.1.weight",
                "norm_out.linear_1.weight",
            ),
            ("final_layer.linear.bias", "norm_out.linear_2.bias"),
        ];
        for (original, diffusers) in cases {
            assert_eq!(Layout::Diffusers.key(original), diffusers, "{original}");
            assert_eq!(Layout::Original.key(original), original);
        }
    }
}
