//! Rotary position embeddings: rotate-half tables (Gemma-2, Qwen3) and NextDiT's adjacent pairs.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Rotate-half RoPE tables `(cos, sin)`, each `[1, 1, L, head_dim]`, for positions
/// `start..start + len`, computed in f32 as transformers computes them
/// (`inv_freq = 1 / θ^(2k/d)`, the angle table repeated for both halves).
pub fn rope_tables<B: Backend>(
    theta: f64,
    head_dim: usize,
    start: usize,
    len: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let hd = head_dim;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|k| 1.0 / (theta as f32).powf((2 * k) as f32 / hd as f32))
        .collect();
    let (mut cos, mut sin) = (Vec::with_capacity(len * hd), Vec::with_capacity(len * hd));
    for pos in start..start + len {
        for _ in 0..2 {
            cos.extend(inv.iter().map(|f| (pos as f32 * f).cos()));
            sin.extend(inv.iter().map(|f| (pos as f32 * f).sin()));
        }
    }
    let t = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, len, hd]), device);
    (t(cos), t(sin))
}

/// Applies rotate-half RoPE: `x·cos + rotate_half(x)·sin`, where `rotate_half` of the halves
/// `(a, b)` is `(−b, a)`; one fused pass on Flex.
///
/// # Shapes
/// - `x`: `[B, H, L, head_dim]`
/// - `cos`, `sin`: `[1, 1, L, head_dim]` (from [`rope_tables`])
/// - returns `[B, H, L, head_dim]`
pub fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        let [_, _, l, hd] = x.dims();
        if hd.is_multiple_of(2) && flex_tables(&x, cos, sin, [1, 1, l, hd]) {
            return crate::flex::rope_half(x, cos, sin);
        }
    }
    apply_rope_generic(x, cos, sin)
}

/// [`apply_rope`] in Burn ops, for every backend.
pub(crate) fn apply_rope_generic<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    x * cos.clone() + Tensor::cat(vec![second.neg(), first], 3) * sin.clone()
}

/// NextDiT's RoPE: rotates adjacent pairs `(x[2k], x[2k+1])` by the angles whose cosines and
/// sines are given (a complex multiplication, as Lumina's `apply_rotary_emb`); one fused pass on
/// Flex.
///
/// # Shapes
/// - `x`: `[B, S, H, hd]`
/// - `cos`, `sin`: `[B, S, 1, hd/2]`
/// - returns `[B, S, H, hd]`
pub fn rope_pairs<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        let [b, s, _, hd] = x.dims();
        if flex_tables(&x, cos, sin, [b, s, 1, hd / 2]) {
            return crate::flex::rope_pairs(x, cos, sin);
        }
    }
    rope_pairs_generic(x, cos, sin)
}

/// [`rope_pairs`] in Burn ops, for every backend.
pub(crate) fn rope_pairs_generic<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, s, h, hd] = x.dims();
    let pairs: Tensor<B, 5> = x.reshape([b, s, h, hd / 2, 2]);
    let re: Tensor<B, 4> = pairs.clone().narrow(4, 0, 1).reshape([b, s, h, hd / 2]);
    let im: Tensor<B, 4> = pairs.narrow(4, 1, 1).reshape([b, s, h, hd / 2]);
    let out_re = re.clone() * cos.clone() - im.clone() * sin.clone();
    let out_im = re * sin.clone() + im * cos.clone();
    Tensor::cat(
        vec![out_re.unsqueeze_dim::<5>(4), out_im.unsqueeze_dim::<5>(4)],
        4,
    )
    .reshape([b, s, h, hd])
}

/// Whether the Flex kernels take `x` (f32 on Flex) with `cos`/`sin` tables of `x`'s dtype and
/// the given shape.
#[cfg(feature = "flex")]
fn flex_tables<B: Backend>(
    x: &Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
    table: [usize; 4],
) -> bool {
    crate::flex::fast::<B>(x.dtype())
        && [cos, sin]
            .iter()
            .all(|t| t.dtype() == x.dtype() && t.dims() == table)
}
