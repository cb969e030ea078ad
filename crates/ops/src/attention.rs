//! Scaled dot-product attention: bidirectional with per-sample key lengths (NextDiT, the VAE) and
//! causal over right-padded samples (the text encoders), grouped-query heads without repeated K/V.

use std::cell::OnceCell;

use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use crate::contiguous;
#[cfg(feature = "flex")]
use crate::flex;

/// Query rows are padded to a multiple of this (the largest stage of cubek's flash kernels:
/// 8 planes × 16 rows), so any kernel autotune has cached for a length bucket accepts the call.
pub const QUERY_BLOCK: usize = 128;

/// Head dims are zero-padded to a multiple of this before CubeCL sees them (zero columns change
/// no dot product, and the padded output columns are cut off): cubek-matmul 0.2's double-buffered
/// unit matmul (`matmul_double_unit_*`, an autotune candidate for the score product `q·kᵀ` of
/// Burn's attention fallback) is wrong, by whole units, when its right-hand side is transposed
/// and the reduced dimension is 8 modulo 16 (head dims 8, 24, 40, …; f32 and f16 alike), while
/// autotune picks by timing alone (`tests/attention.rs` shows the kernel both ways).
pub const HEAD_DIM_BLOCK: usize = 16;

/// Scaled dot-product attention, `softmax(q·kᵀ/√d)·v`, with grouped-query heads and per-sample
/// key lengths.
///
/// Query head `i` uses key/value head `i / (H / H_kv)` (consecutive query heads share one, as
/// Lumina 2 and Gemma group them), without repeating K and V in memory: the `H / H_kv` query
/// heads of a group are stacked into one longer query sequence, which is exact because every
/// query row attends independently. `kv_lens[b]`, when given, is the number of valid keys of
/// sample `b` (the rest is padding and ignored); samples whose keys are all valid share one call,
/// shorter ones run alone on their valid keys, so no mask is ever built.
///
/// # Shapes
/// - `q`: `[B, H, S_q, D]`
/// - `k`, `v`: `[B, H_kv, S_kv, D]`, `H` a multiple of `H_kv`
/// - `kv_lens`: `B` lengths in `1..=S_kv`
/// - returns `[B, H, S_q, D]` (contiguous or not; callers reshape it)
///
/// # Panics
/// If the shapes disagree as above; callers validate user input before this point.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = Default::default();
/// let q = Tensor::<Flex, 4>::random([2, 4, 10, 8], Distribution::Normal(0.0, 1.0), &device);
/// let k = Tensor::<Flex, 4>::random([2, 2, 10, 8], Distribution::Normal(0.0, 1.0), &device);
/// let v = Tensor::<Flex, 4>::random([2, 2, 10, 8], Distribution::Normal(0.0, 1.0), &device);
/// // The second sample's last 4 keys are padding.
/// let o = sakiko_ops::attention(q, k, v, Some(&[10, 6]));
/// assert_eq!(o.dims(), [2, 4, 10, 8]);
/// ```
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    kv_lens: Option<&[usize]>,
) -> Tensor<B, 4> {
    let [b, h, _, d] = q.dims();
    let [kb, kv_heads, s_kv, kd] = k.dims();
    assert!(
        kb == b && kd == d && kv_heads > 0 && h.is_multiple_of(kv_heads) && v.dims() == k.dims(),
        "attention: q {:?}, k {:?}, v {:?}",
        q.dims(),
        k.dims(),
        v.dims()
    );
    if let Some(lens) = kv_lens {
        assert_eq!(
            lens.len(),
            b,
            "attention: {} key lengths for batch {b}",
            lens.len()
        );
        for &len in lens {
            assert!(
                (1..=s_kv).contains(&len),
                "attention: key length {len} of {s_kv}"
            );
        }
    }
    #[cfg(feature = "flex")]
    let scale = 1.0 / (d as f32).sqrt();
    #[cfg(feature = "flex")]
    let (q, k, v) = match flex::attention(q, k, v, flex::Visible::Keys(kv_lens), scale) {
        Ok(o) => return o,
        Err(inputs) => inputs,
    };
    let full = |len: &usize| *len == s_kv;
    let Some(lens) = kv_lens.filter(|lens| !lens.iter().all(full)) else {
        return grouped(q, k, v);
    };
    // Consecutive samples of the same kind (all keys valid, or the same short length) share a call.
    let mut out = Vec::new();
    let mut start = 0;
    while start < b {
        let len = lens[start];
        let end = (start..b).find(|&i| lens[i] != len).unwrap_or(b);
        let n = end - start;
        out.push(grouped(
            q.clone().narrow(0, start, n),
            k.clone().narrow(0, start, n).narrow(2, 0, len),
            v.clone().narrow(0, start, n).narrow(2, 0, len),
        ));
        start = end;
    }
    Tensor::cat(out, 0)
}

/// Which keys each query of a causal self-attention over right-padded samples sees: query `i` of
/// sample `b` sees keys `j ≤ i` with `j < lens[b]` and, with a `window`, `i − j < window`.
///
/// Made once per forward and shared by every layer: the dense `[B, H, L, L]` mask that the
/// generic path needs is built on first use and kept (not rebuilt per layer).
#[derive(Debug)]
pub struct CausalMask<B: Backend> {
    lens: Vec<usize>,
    window: Option<usize>,
    dense: OnceCell<Tensor<B, 4, Bool>>,
}

impl<B: Backend> CausalMask<B> {
    /// Samples of `lens` valid tokens, optionally within a sliding `window`.
    pub fn new(lens: &[usize], window: Option<usize>) -> Self {
        Self {
            lens: lens.to_vec(),
            window,
            dense: OnceCell::new(),
        }
    }

    /// The dense boolean mask (`true` = hidden) for `heads` heads of `l` tokens, never an
    /// `expand`ed view (CubeCL's flash kernels would read every sample's mask from the first one).
    fn dense(&self, heads: usize, l: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        let b = self.lens.len();
        if let Some(mask) = self.dense.get().filter(|m| m.dims() == [b, heads, l, l]) {
            return mask.clone();
        }
        let mut values = Vec::with_capacity(b * heads * l * l);
        for &len in &self.lens {
            for _ in 0..heads {
                for i in 0..l {
                    values
                        .extend((0..l).map(|j| {
                            !(j <= i && j < len && self.window.is_none_or(|w| j + w > i))
                        }));
                }
            }
        }
        let mask: Tensor<B, 4, Bool> =
            Tensor::from_data(TensorData::new(values, [b, heads, l, l]), device);
        let _ = self.dense.set(mask.clone());
        mask
    }
}

/// Causal self-attention over right-padded samples, as decoder-only text encoders (Gemma-2,
/// Qwen3's prefill) run it, with the visibility of `mask`; scores scaled by `scale`, then, with
/// a `softcap`, mapped to `softcap · tanh(score / softcap)` (Gemma-2 as transformers configures
/// it).
///
/// On Flex without softcapping one fused kernel (no mask, no repeated K/V, only each block's
/// visible keys computed); elsewhere Burn's attention with K/V heads repeated and `mask`'s dense
/// form.
/// Padded query rows see the sample's valid keys, as transformers' eager attention gives them.
///
/// # Shapes
/// - `q`: `[B, H, L, D]`
/// - `k`, `v`: `[B, H_kv, L, D]`, `H` a multiple of `H_kv`
/// - `mask`: `B` lengths in `1..=L`
/// - returns `[B, H, L, D]` (contiguous or not; callers reshape it)
///
/// # Panics
/// If the shapes disagree as above; callers validate user input before this point.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = Default::default();
/// let q = Tensor::<Flex, 4>::random([2, 4, 6, 8], Distribution::Normal(0.0, 1.0), &device);
/// let k = Tensor::<Flex, 4>::random([2, 2, 6, 8], Distribution::Normal(0.0, 1.0), &device);
/// let v = Tensor::<Flex, 4>::random([2, 2, 6, 8], Distribution::Normal(0.0, 1.0), &device);
/// // The second prompt has 4 tokens and 2 of padding; no window.
/// let mask = sakiko_ops::CausalMask::new(&[6, 4], None);
/// let o = sakiko_ops::causal_attention(q, k, v, &mask, 8f64.powf(-0.5), None);
/// assert_eq!(o.dims(), [2, 4, 6, 8]);
/// ```
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &CausalMask<B>,
    scale: f64,
    softcap: Option<f64>,
) -> Tensor<B, 4> {
    let lens = &mask.lens[..];
    let [b, h, l, d] = q.dims();
    let [kb, kv_heads, kl, kd] = k.dims();
    assert!(
        kb == b
            && kl == l
            && kd == d
            && kv_heads > 0
            && h.is_multiple_of(kv_heads)
            && v.dims() == k.dims()
            && lens.len() == b
            && lens.iter().all(|len| (1..=l).contains(len)),
        "causal attention: q {:?}, k {:?}, v {:?}, lengths {lens:?}",
        q.dims(),
        k.dims(),
        v.dims()
    );
    #[cfg(feature = "flex")]
    let (q, k, v) = match softcap {
        Some(_) => (q, k, v),
        None => {
            let visible = flex::Visible::Causal {
                lens,
                window: mask.window,
            };
            match flex::attention(q, k, v, visible, scale as f32) {
                Ok(o) => return o,
                Err(inputs) => inputs,
            }
        }
    };
    let dense = mask.dense(h, l, &q.device());
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap,
        is_causal: false,
    };
    let groups = h / kv_heads;
    let width = d.next_multiple_of(HEAD_DIM_BLOCK);
    let o = module::attention(
        pad_zeros(q, 3, width),
        pad_zeros(repeat_kv(k, groups), 3, width),
        pad_zeros(repeat_kv(v, groups), 3, width),
        Some(dense),
        None,
        options,
    );
    o.narrow(3, 0, d)
}

/// Repeats each key/value head `groups` times, consecutive copies together (query head `i` uses
/// key/value head `i / groups`), for kernels that need one K/V head per query head (Burn's masked
/// attention). [`attention`] avoids this copy.
///
/// # Shapes
/// - `t`: `[B, H_kv, S, D]`
/// - returns `[B, H_kv · groups, S, D]`
pub fn repeat_kv<B: Backend>(t: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return t;
    }
    let [b, h, s, d] = t.dims();
    let t: Tensor<B, 5> = t.unsqueeze_dim(2);
    t.repeat_dim(2, groups).reshape([b, h * groups, s, d])
}

/// One backend call: query groups stacked per KV head, rows padded to [`QUERY_BLOCK`] and head
/// dims to [`HEAD_DIM_BLOCK`], every input freshly laid out (contiguous).
fn grouped<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, s_q, d] = q.dims();
    let kv_heads = k.dims()[1];
    let rows = h / kv_heads * s_q;
    let width = d.next_multiple_of(HEAD_DIM_BLOCK);
    let q = contiguous(q.reshape([b, kv_heads, rows, d]));
    // Zero queries give a uniform softmax: finite rows that are cut off below.
    let q = pad_zeros(q, 2, rows.next_multiple_of(QUERY_BLOCK));
    let options = AttentionModuleOptions {
        scale: Some(1.0 / (d as f64).sqrt()),
        ..Default::default()
    };
    let o = module::attention(
        pad_zeros(q, 3, width),
        pad_zeros(contiguous(k), 3, width),
        pad_zeros(contiguous(v), 3, width),
        None,
        None,
        options,
    );
    o.narrow(2, 0, rows).narrow(3, 0, d).reshape([b, h, s_q, d])
}

/// `t` extended with zeros along `dim` to length `to` (as it is when already that long).
fn pad_zeros<B: Backend>(t: Tensor<B, 4>, dim: usize, to: usize) -> Tensor<B, 4> {
    let mut shape = t.dims();
    if shape[dim] >= to {
        return t;
    }
    shape[dim] = to - shape[dim];
    let zeros = Tensor::zeros(shape, (&t.device(), t.dtype()));
    Tensor::cat(vec![t, zeros], dim)
}
