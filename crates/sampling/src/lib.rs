//! # sakiko-sampling
//!
//! Everything between "a denoiser" and "a finished latent" for flow-matching models of the
//! Lumina-Image-2.0 family, computed as ComfyUI computes it, since that is where users tuned the
//! model card's settings (`euler_ancestral` or `res_multistep`, `linear_quadratic`, 30 steps,
//! CFG 4–5.5):
//!
//! - [`FlowSampling`]: σ ↔ timestep with shift 6, the 1000-entry σ table, noise scaling;
//! - [`Scheduler`]: ComfyUI's nine schedulers, with `denoise` trimming for image-to-image;
//! - [`Sampler`] and [`sample`]: euler, euler_ancestral (rectified-flow form), the res_multistep
//!   family, dpmpp_2m and heun, with a per-step callback that can cancel;
//! - [`Guidance`]: CFG on x0 predictions (with the cfg = 1 shortcut), RenormCFG, CFG-Zero*, and
//!   diffusers' normalised and truncated CFG;
//! - [`TorchGenerator`]: ComfyUI-compatible seeds, bit-exact with `torch.randn` on the CPU.
//!
//! No model code lives here: a model plugs in through the [`Denoiser`] trait.
//!
//! ```
//! use std::ops::ControlFlow;
//! use burn::backend::Flex;
//! use burn::tensor::{Tensor, TensorData};
//! use sakiko_sampling::*;
//!
//! /// A toy model: the data is the constant 0.5, so x0 is always 0.5.
//! struct Half;
//! impl Denoiser<Flex> for Half {
//!     fn denoise(&mut self, x: &Tensor<Flex, 4>, _: f32, _: Cond) -> Result<Tensor<Flex, 4>, DenoiseError> {
//!         Ok(x.ones_like().mul_scalar(0.5))
//!     }
//! }
//!
//! let ms = FlowSampling::lumina2();
//! let sigmas = Scheduler::LinearQuadratic.sigmas(&ms, 30)?;
//! let seed = 42;
//! let noise = TorchGenerator::new(seed).randn(16 * 8 * 8, RandnKernel::Avx2);
//! let device = Default::default();
//! let noise = Tensor::<Flex, 4>::from_data(TensorData::new(noise, [1, 16, 8, 8]), &device);
//! let x = FlowSampling::noise_scaling(sigmas[0], noise.clone(), noise.zeros_like());
//!
//! let config = SamplerConfig::new("euler_ancestral".parse()?, Guidance::Cfg { scale: 4.5 });
//! let mut ancestral = TorchNoise::new(seed, RandnKernel::Avx2);
//! let latent = sample(&config, &mut Half, x, &sigmas, &mut ancestral, |step| {
//!     assert!(step.step < 30);
//!     ControlFlow::Continue(())
//! })?;
//! let max_err: f32 = latent.sub_scalar(0.5).abs().max().into_scalar();
//! assert!(max_err < 1e-5);
//! # Ok::<(), SamplingError>(())
//! ```

mod denoiser;
mod error;
mod guidance;
mod model_sampling;
mod names;
mod noise;
mod sampler;
mod schedule;

pub use denoiser::{Cond, Denoiser};
pub use error::{DenoiseError, SamplingError};
pub use guidance::{Guidance, Guided};
pub use model_sampling::{FlowSampling, TABLE_LEN, time_snr_shift};
pub use noise::{RandnKernel, TorchGenerator};
pub use sampler::{
    NoiseSource, Sampler, SamplerConfig, StepInfo, TorchNoise, sample, validate_sigmas,
};
pub use schedule::Scheduler;
