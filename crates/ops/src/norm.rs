//! RMSNorm: the module with a plain gain (NextDiT, Qwen3), and the function behind it, which
//! Gemma's `1 + w` norm calls too.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{FloatDType, Tensor, backend::Backend};

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension (a plain gain, not `1 + w`), computed
/// in f32 and returned in the input's dtype, as ComfyUI and diffusers do for half precision.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub(crate) weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm over `dim` features (gain 1 until loaded).
    pub fn init(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Initializer::Ones.init([dim], device),
            eps,
        }
    }

    /// Normalises the last dimension (one fused pass on Flex in f32).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        rms_norm(x, self.weight.val(), self.eps)
    }

    /// `forward(x) · scale`, with one scale row per sample (adaLN modulation: `scale` is
    /// `1 + scale_msa`); one fused pass on Flex in f32.
    ///
    /// # Shapes
    /// `x`: `[B, S, D]`; `scale`: `[B, 1, D]`; returns `[B, S, D]`.
    pub fn forward_scaled(&self, x: Tensor<B, 3>, scale: Tensor<B, 3>) -> Tensor<B, 3> {
        #[cfg(feature = "flex")]
        if fast(&x, &self.weight.val(), Some(&scale), None) {
            return crate::flex::rms_norm(x, self.weight.val(), self.eps, Some(scale), None);
        }
        self.forward(x) * scale
    }

    /// `residual + gate · forward(x)` (a sandwich norm's output added to the residual stream,
    /// gated per sample by `tanh(gate_msa)` in modulated blocks); one fused pass on Flex in f32.
    ///
    /// # Shapes
    /// `residual`, `x`: `[B, S, D]`; `gate`: `[B, 1, D]`; returns `[B, S, D]`.
    pub fn forward_residual(
        &self,
        residual: Tensor<B, 3>,
        x: Tensor<B, 3>,
        gate: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        #[cfg(feature = "flex")]
        if fast(&x, &self.weight.val(), gate.as_ref(), Some(&residual)) {
            return crate::flex::rms_norm(x, self.weight.val(), self.eps, gate, Some(residual));
        }
        match gate {
            Some(gate) => residual + gate * self.forward(x),
            None => residual + self.forward(x),
        }
    }
}

/// `x · rsqrt(mean(x²) + eps) · gain` over the last dimension, computed in f32 and returned in
/// `x`'s dtype; one fused pass on Flex in f32.
///
/// # Shapes
/// `x`: `[…, D]`; `gain`: `[D]`; returns `x`'s shape.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gain: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if fast(&x, &gain, None, None) {
        return crate::flex::rms_norm(x, gain, eps, None, None);
    }
    rms_norm_generic(x, gain, eps)
}

/// [`rms_norm`] in Burn ops, for every backend.
pub(crate) fn rms_norm_generic<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gain: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    ((x / rms) * gain.unsqueeze()).cast(FloatDType::from(dtype))
}

/// Whether the Flex kernel takes these operands: f32 throughout, a per-sample `[B, 1, D]` scale
/// and a residual of `x`'s shape.
#[cfg(feature = "flex")]
fn fast<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gain: &Tensor<B, 1>,
    scale: Option<&Tensor<B, 3>>,
    residual: Option<&Tensor<B, D>>,
) -> bool {
    let dims = x.dims();
    crate::flex::fast::<B>(x.dtype())
        && gain.dtype() == x.dtype()
        && scale.is_none_or(|s| {
            s.dtype() == x.dtype() && D == 3 && s.dims() == [dims[0], 1, dims[D - 1]]
        })
        && residual.is_none_or(|r| r.dtype() == x.dtype() && r.dims() == dims)
}
