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
//! multiple of [`QUERY_BLOCK`] rows. Head dims are zero-padded to a multiple of
//! [`HEAD_DIM_BLOCK`] (here and in [`causal_attention`]): one of cubek-matmul's autotune
//! candidates multiplies `q·kᵀ` wrongly at head dims of 8 modulo 16; for the same reason
//! [`conv2d`] multiplies 1×1 kernels itself rather than through CubeCL's transposed weight view.
//!
//! On Flex (CPU), with the default `flex` feature, [`linear`], [`conv2d`], [`attention`], [`swiglu`],
//! [`geglu`], [`rope_pairs`], [`rms_norm`] / [`RmsNorm`], [`group_norm`] and
//! [`upsample_nearest2x`] run this crate's fused, threaded f32 kernels (`flex/`); other backends
//! and half precision take the generic Burn code, against which the kernels are tested.
//!
//! [`clamp_fp16`] is ComfyUI's overflow guard for f16 activations. (Linear weights are loaded
//! row-major `[in, out]` by `sakiko_weights::load_module`, never as transposed views, which Burn
//! 0.21's fusion multiplies wrongly at one row: `tests/fusion.rs` shows both.)

mod attention;
#[cfg(feature = "flex")]
mod flex;
mod group_norm;
mod norm;
mod rope;

pub use attention::{
    CausalMask, HEAD_DIM_BLOCK, QUERY_BLOCK, attention, causal_attention, repeat_kv,
};
pub use group_norm::{group_norm, upsample_nearest2x};
pub use norm::{RmsNorm, rms_norm};
pub use rope::{apply_rope, rope_pairs, rope_tables};

use burn::module::Param;
use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};

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
    let weight = layer.weight.val();
    if let DType::QFloat(_) = weight.dtype() {
        return quantized_linear(weight, layer.bias.as_ref().map(|b| b.val()), x);
    }
    layer.forward(x)
}

/// `x·W + b` with `W` a quantised `[in, out]` view (`sakiko_weights`' kept Q8_0 weights):
/// `Tensor::matmul` reaches the backend's quantised GEMM (on CubeCL, blocks dequantised as they
/// are read), where `Linear::forward` would dequantise the whole weight first, into the
/// backend's default float type rather than `x`'s.
fn quantized_linear<B: Backend, const D: usize>(
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [k, n] = weight.dims();
    let rows = dims[..D - 1].iter().product();
    let x = x.reshape([rows, k]);
    // Burn 0.21's fusion adds the bias wrongly to a one-row product with a transposed weight
    // (`tests/fusion.rs`), and the quantised weight is such a view: one row goes through as two.
    let x = if rows == 1 {
        Tensor::cat(vec![x.clone(), x], 0)
    } else {
        x
    };
    // With fusion on, the quantised product comes out in the backend's default float type,
    // whatever `x`'s: back to `x`'s (a no-op in f32).
    let dtype = FloatDType::from(x.dtype());
    let y = x.matmul(weight).cast(dtype);
    let y = match bias {
        Some(b) => y + b.unsqueeze_dim(0),
        None => y,
    };
    dims[D - 1] = n;
    y.narrow(0, 0, rows).reshape(dims)
}

/// A 2-D convolution ([`Conv2d::forward`](burn::nn::conv::Conv2d::forward)); on Flex, at stride
/// 1 without groups or dilation, im2col by blocks of output rows kept in cache, each block one
/// threaded-out GEMM written straight into the output.
///
/// Half-precision inputs (f16, bf16) are convolved in f32 and the result rounded once to their
/// dtype, as PyTorch accumulates half convolutions: CubeCL's direct kernel, the only one its
/// autotune has for kernels over 1×1 on devices without tensor-core tiles (lavapipe, many Vulkan
/// and Metal GPUs), sums all `k²·C_in` products in the storage type, which put the f16 VAE at
/// 5–6× PyTorch's f16 error on wgpu.
///
/// Elsewhere, 1×1 kernels (stride 1, unpadded, ungrouped: the VAE's `conv_shortcut`) are one
/// batched product `W·x`, both sides row-major: CubeCL's own 1×1 path multiplies by a transposed
/// view of the weight, which autotune may hand to the double-buffered unit matmul that is wrong
/// when `C_in` is 8 modulo 16 (see [`HEAD_DIM_BLOCK`]).
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
    let dtype = x.dtype();
    if matches!(dtype, DType::F16 | DType::BF16) {
        let mut wide = layer.clone();
        wide.weight = Param::from_tensor(layer.weight.val().cast(FloatDType::F32));
        wide.bias =
            (layer.bias.as_ref()).map(|b| Param::from_tensor(b.val().cast(FloatDType::F32)));
        return conv2d(&wide, x.cast(FloatDType::F32)).cast(FloatDType::from(dtype));
    }
    if is_pointwise(layer) {
        return pointwise_conv2d(layer, x);
    }
    layer.forward(x)
}

/// Whether `layer` is a 1×1 convolution that maps each pixel alone (stride 1, no padding, one
/// group).
fn is_pointwise<B: Backend>(layer: &burn::nn::conv::Conv2d<B>) -> bool {
    use burn::nn::PaddingConfig2d::{Explicit, Same, Valid};
    layer.kernel_size == [1, 1]
        && layer.stride == [1, 1]
        && layer.groups == 1
        && matches!(layer.padding, Valid | Same | Explicit(0, 0, 0, 0))
}

/// A pointwise convolution as `W·x` per sample: `[C_out, C_in] · [C_in, H·W]`.
fn pointwise_conv2d<B: Backend>(
    layer: &burn::nn::conv::Conv2d<B>,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [n, c_in, h, w] = x.dims();
    let c_out = layer.weight.dims()[0];
    let weight = layer.weight.val().reshape([1, c_out, c_in]);
    let y = weight.matmul(x.reshape([n, c_in, h * w]));
    let y = match &layer.bias {
        Some(b) => y + b.val().reshape([1, c_out, 1]),
        None => y,
    };
    y.reshape([n, c_out, h, w])
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
