//! The weight update of one adapter module, computed on the device in f32, and how it is applied
//! to a layer's weight (ComfyUI's `calculate_weight`; DoRA as the trainers compute it).

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::file::{AdapterModule, Factor, Part, Update};

/// A part as an f32 `[rows, cols]` matrix on `device`.
fn matrix<B: Backend>(part: &Part, device: &B::Device) -> Tensor<B, 2> {
    let shape = [part.shape[0], part.values.len() / part.shape[0].max(1)];
    Tensor::from_data(
        TensorData::new(part.values.clone(), shape),
        (device, DType::F32),
    )
}

/// A vector (a `diff_b`, a `dora_scale`) as f32 on `device`.
pub(crate) fn vector<B: Backend>(part: &Part, device: &B::Device) -> Tensor<B, 1> {
    let n = part.values.len();
    Tensor::from_data(
        TensorData::new(part.values.clone(), [n]),
        (device, DType::F32),
    )
}

/// `kron(a, b)` for matrices `[p, q]` ⊗ `[r, s]` → `[p·r, q·s]`.
fn kron<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    let ([p, q], [r, s]) = (a.dims(), b.dims());
    let a: Tensor<B, 4> = a.reshape([p, 1, q, 1]);
    let b: Tensor<B, 4> = b.reshape([1, r, 1, s]);
    (a * b).reshape([p * r, q * s])
}

/// The module's `ΔW` `[out, in]` in f32, without alpha ÷ rank or strength (`None` for a
/// bias-only module).
pub(crate) fn delta<B: Backend>(
    module: &AdapterModule,
    device: &B::Device,
) -> Option<Tensor<B, 2>> {
    let m = |part: &Part| matrix::<B>(part, device);
    let factor = |f: &Factor| match f {
        Factor::Whole(w) => m(w),
        Factor::Product(a, b) => m(a).matmul(m(b)),
    };
    Some(match &module.update {
        Update::Lora { up, down } => m(up).matmul(m(down)),
        Update::LoKr { w1, w2 } => kron(factor(w1), factor(w2)),
        Update::LoHa { w1, w2 } => m(&w1.0).matmul(m(&w1.1)) * m(&w2.0).matmul(m(&w2.1)),
        Update::Diff(d) => m(d),
        Update::BiasOnly => return None,
    })
}

/// Applies a module's update at `strength` to `weight` (f32, Burn's `[in, out]` layout: the
/// columns are the rows of PyTorch's `[out, in]` weight the module covers); `delta` is `ΔWᵀ`:
/// - plain: `W + strength · alpha/rank · ΔW` (ComfyUI, sd-scripts, LyCORIS's forward);
/// - DoRA: `W' = (W + alpha/rank · ΔW) · m / ‖W + alpha/rank · ΔW‖`, the norm taken per output row
///   when the magnitude `m` is `[out]` / `[out, 1]` (LyCORIS's default, PEFT) and per input
///   column when it is `[1, in]`, plus f32's epsilon as LyCORIS adds; then
///   `W + strength · (W' − W)` as ComfyUI blends strengths. At strength 1 this is the weight the
///   adapter was trained with. (ComfyUI divides by the norm of the original `W` on the output
///   axis instead, which is not what LyCORIS or PEFT train.)
pub(crate) fn apply<B: Backend>(
    weight: Tensor<B, 2>,
    delta: Tensor<B, 2>,
    module: &AdapterModule,
    dora_scale: Option<Tensor<B, 1>>,
    strength: f32,
) -> Tensor<B, 2> {
    let scaled = delta.mul_scalar(module.scale());
    let Some(magnitude) = dora_scale else {
        return weight + scaled.mul_scalar(strength);
    };
    let [inp, out] = weight.dims();
    let merged = weight.clone() + scaled;
    let norm = |dim: usize| {
        merged
            .clone()
            .square()
            .sum_dim(dim)
            .sqrt()
            .add_scalar(f32::EPSILON)
    };
    let decomposed = if module.dora_per_row() {
        merged.clone() * (magnitude.reshape([1, out]) / norm(0))
    } else {
        merged.clone() * (magnitude.reshape([inp, 1]) / norm(1))
    };
    weight.clone() + (decomposed - weight).mul_scalar(strength)
}
