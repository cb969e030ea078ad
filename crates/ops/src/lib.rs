//! # sakiko-ops
//!
//! Tensor operations shared by the sakiko-lumina model crates, written so that every Burn
//! backend runs its fast kernel for them and computes the right answer.
//!
//! [`attention`] is the one entry to scaled dot-product attention for NextDiT and the VAE. With
//! CubeCL's `autotune` on (CUDA, wgpu), Burn 0.21 may pick cubek-attention's flash kernels,
//! which (a) address each batch×head at `index × stride(1)` without making inputs contiguous,
//! (b) read a mask as stored, so an `expand`ed mask (stride 0 over heads) gives every sample
//! the first one's mask, and (c) only accept query lengths that are multiples of the kernel's
//! stage (up to 128 rows), while the autotune cache is keyed by lengths rounded to powers of two
//! and replays a cached choice with `.expect`, so a new prompt length could panic. This module
//! therefore hands the backend only contiguous tensors, never a mask, and queries padded to a
//! multiple of [`QUERY_BLOCK`] rows.
//!
//! On Flex (CPU), with the default `flex` feature, [`linear`], [`conv2d`], [`attention`], [`swiglu`],
//! [`geglu`], [`rope_pairs`], [`rms_norm`] / [`RmsNorm`], [`group_norm`] and
//! [`upsample_nearest2x`] run this crate's fused, threaded f32 kernels (`flex/`); other backends
//! and half precision take the generic Burn code, against which the kernels are tested.
//!
//! [`clamp_fp16`] is ComfyUI's overflow guard for f16 activations. (Linear weights are loaded
//! row-major `[in, out]` by `sakiko_weights::load_module`, never as transposed views, which Burn
//! 0.21's fusion multiplies wrongly at one row: `tests/fusion.rs` shows both.)

#[cfg(feature = "flex")]
mod flex;
mod group_norm;
mod norm;
mod rope;

pub use group_norm::{group_norm, upsample_nearest2x};
pub use norm::{RmsNorm, rms_norm};
pub use rope::{apply_rope, rope_pairs, rope_tables};

use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, backend::Backend};

/// Query rows are padded to a multiple of this (the largest stage of cubek's flash kernels:
/// 8 planes × 16 rows), so any kernel autotune has cached for a length bucket accepts the call.
pub const QUERY_BLOCK: usize = 128;

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
    let (q, k, v) = match flex::attention(q, k, v, kv_lens) {
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

/// A linear layer, `x·W + b` ([`Linear::forward`](burn::nn::Linear::forward)); on Flex one
/// threaded GEMM split by output columns, with the bias fused in.
///
/// # Shapes
/// `x`: `[..., d_input]`, returns `[..., d_output]`.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = Default::default();
/// let layer = LinearConfig::new(8, 16).init::<Flex>(&device);
/// let x = Tensor::<Flex, 3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
/// let y = sakiko_ops::linear(&layer, x.clone());
/// assert!(y.all_close(layer.forward(x), None, Some(1e-5)));
/// ```
pub fn linear<B: Backend, const D: usize>(
    layer: &burn::nn::Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::linear(layer, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    layer.forward(x)
}

/// A 2-D convolution ([`Conv2d::forward`](burn::nn::conv::Conv2d::forward)); on Flex, at stride
/// 1 without groups or dilation, im2col by blocks of output rows kept in cache, each block one
/// threaded-out GEMM written straight into the output.
///
/// # Shapes
/// `x`: `[N, C_in, H, W]`, returns `[N, C_out, H_out, W_out]`.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::nn::PaddingConfig2d;
/// use burn::nn::conv::Conv2dConfig;
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = Default::default();
/// let conv = Conv2dConfig::new([4, 8], [3, 3])
///     .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
///     .init::<Flex>(&device);
/// let x = Tensor::<Flex, 4>::random([2, 4, 6, 5], Distribution::Normal(0.0, 1.0), &device);
/// let y = sakiko_ops::conv2d(&conv, x.clone());
/// assert!(y.all_close(conv.forward(x), None, Some(1e-5)));
/// ```
pub fn conv2d<B: Backend>(layer: &burn::nn::conv::Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::conv2d(layer, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    layer.forward(x)
}

/// SwiGLU's gating, `silu(gate) · up` element-wise (one fused pass on Flex).
///
/// # Shapes
/// `gate`, `up`: the same shape, returned.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if flex::fast::<B>(gate.dtype()) && up.dtype() == gate.dtype() && up.dims() == gate.dims() {
        return flex::swiglu(gate, up);
    }
    swiglu_generic(gate, up)
}

/// [`swiglu`] in Burn ops, for every backend.
pub(crate) fn swiglu_generic<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    burn::tensor::activation::silu(gate) * up
}

/// Gemma's gated GELU, `gelu_tanh(gate) · up` element-wise, with PyTorch's tanh approximation
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (`gelu_pytorch_tanh`); one fused pass on Flex.
///
/// # Shapes
/// `gate`, `up`: the same shape, returned.
pub fn geglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if flex::fast::<B>(gate.dtype()) && up.dtype() == gate.dtype() && up.dims() == gate.dims() {
        return flex::geglu(gate, up);
    }
    geglu_generic(gate, up)
}

/// [`geglu`] in Burn ops, for every backend.
pub(crate) fn geglu_generic<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let x = gate;
    // x·x·x rather than `powi_scalar(3)`, which Flex computes with a scalar `powf` per element.
    let inner = (x.clone() + (x.clone() * x.clone() * x.clone()).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f32::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0) * up
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

/// One backend call: query groups stacked per KV head, rows padded to [`QUERY_BLOCK`], every
/// input freshly laid out (contiguous).
fn grouped<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, s_q, d] = q.dims();
    let kv_heads = k.dims()[1];
    let rows = h / kv_heads * s_q;
    let padded = rows.next_multiple_of(QUERY_BLOCK);
    let q = contiguous(q.reshape([b, kv_heads, rows, d]));
    let q = if padded > rows {
        // Zero queries give a uniform softmax: finite rows that are cut off below.
        let pad = Tensor::zeros([b, kv_heads, padded - rows, d], (&q.device(), q.dtype()));
        Tensor::cat(vec![q, pad], 2)
    } else {
        q
    };
    let o = module::attention(
        q,
        contiguous(k),
        contiguous(v),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    o.narrow(2, 0, rows).reshape([b, h, s_q, d])
}

/// Why `dtype` cannot be a model's compute dtype on `device` (only F32, BF16 and F16, and only
/// those the device has), for the models' `Unsupported` errors.
pub fn check_compute_dtype<B: Backend>(
    dtype: burn::tensor::FloatDType,
    device: &B::Device,
) -> Result<(), String> {
    use burn::tensor::FloatDType::{BF16, F16, F32};
    if !matches!(dtype, F32 | BF16 | F16) {
        return Err(format!("compute dtype {dtype:?} (use F32, BF16 or F16)"));
    }
    if !B::supports_dtype(device, dtype.into()) {
        return Err(format!(
            "the {} backend cannot compute in {dtype:?} on this device",
            B::name(device)
        ));
    }
    Ok(())
}

/// ComfyUI's `clamp_fp16`: in f16, infinities become ±65504 and NaN 0 (attention and
/// feed-forward outputs can exceed f16's range); other dtypes pass through.
pub fn clamp_fp16<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() != DType::F16 {
        return x;
    }
    let nan = x.clone().is_nan();
    x.clamp(-65504.0, 65504.0).mask_fill(nan, 0.0)
}

/// `x` with a fresh row-major layout: flattening cannot be a view of a transposed or sliced
/// tensor, so every backend copies it (and leaves contiguous tensors as they are).
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let flat: Tensor<B, 1> = x.reshape([dims.iter().product::<usize>()]);
    flat.reshape(dims)
}
