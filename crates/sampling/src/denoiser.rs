//! The interface between samplers and a model.

use burn::tensor::{Tensor, backend::Backend};

use crate::DenoiseError;

/// Which conditioning a denoiser call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cond {
    /// The prompt.
    Positive,
    /// The negative prompt.
    Negative,
}

/// A model that predicts clean data: given latents `x` `[B, C, H, W]` at noise level σ, it returns
/// the x0 (denoised) estimate under one conditioning.
///
/// The model crate owns the conversion from σ to its own time and the sign of its output (see
/// [`crate::FlowSampling::denoised`]); samplers only ever see x0 predictions, as in ComfyUI.
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use sakiko_sampling::{Cond, DenoiseError, Denoiser};
///
/// /// Data is always zero, so x0 is zero whatever the input.
/// struct Zero;
/// impl Denoiser<Flex> for Zero {
///     fn denoise(&mut self, x: &Tensor<Flex, 4>, _sigma: f32, _cond: Cond) -> Result<Tensor<Flex, 4>, DenoiseError> {
///         Ok(x.zeros_like())
///     }
/// }
/// ```
pub trait Denoiser<B: Backend> {
    /// The x0 prediction for `x` at noise level `sigma` under `cond`.
    fn denoise(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
        cond: Cond,
    ) -> Result<Tensor<B, 4>, DenoiseError>;

    /// The positive and negative predictions. The default makes two calls; a model that can run
    /// both in one batch (padding captions of different lengths with a mask) overrides it.
    fn denoise_pair(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), DenoiseError> {
        Ok((
            self.denoise(x, sigma, Cond::Positive)?,
            self.denoise(x, sigma, Cond::Negative)?,
        ))
    }
}
