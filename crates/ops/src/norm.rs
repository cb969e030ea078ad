//! RMSNorm with a plain gain, shared by NextDiT and Qwen3.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{FloatDType, Tensor, backend::Backend};

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension (a plain gain, not `1 + w`), computed
/// in f32 and returned in the input's dtype, as ComfyUI and diffusers do for half precision.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    weight: Param<Tensor<B, 1>>,
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

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
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
