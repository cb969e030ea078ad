//! RMSNorm with a plain gain, shared by NextDiT and Qwen3.

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
        #[cfg(feature = "flex")]
        if self.fast(x.dtype()) {
            return crate::flex::rms_norm(x, self.weight.val(), self.eps, None);
        }
        self.generic(x)
    }

    /// `forward(x) · scale`, with one scale row per sample (adaLN modulation: `scale` is
    /// `1 + scale_msa`); one fused pass on Flex in f32.
    ///
    /// # Shapes
    /// `x`: `[B, S, D]`; `scale`: `[B, 1, D]`; returns `[B, S, D]`.
    pub fn forward_scaled(&self, x: Tensor<B, 3>, scale: Tensor<B, 3>) -> Tensor<B, 3> {
        #[cfg(feature = "flex")]
        if self.fast(x.dtype())
            && scale.dtype() == x.dtype()
            && scale.dims() == [x.dims()[0], 1, x.dims()[2]]
        {
            return crate::flex::rms_norm(x, self.weight.val(), self.eps, Some(scale));
        }
        self.forward(x) * scale
    }

    #[cfg(feature = "flex")]
    fn fast(&self, dtype: burn::tensor::DType) -> bool {
        crate::flex::fast::<B>(dtype) && self.weight.val().dtype() == dtype
    }

    /// [`Self::forward`] in Burn ops, for every backend.
    pub(crate) fn generic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        ((x / rms) * self.weight.val().unsqueeze()).cast(FloatDType::from(dtype))
    }
}
