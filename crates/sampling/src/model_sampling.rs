//! Flow-matching model sampling: σ ↔ timestep, the σ table, and the conversions around the model.
//!
//! This is ComfyUI's `ModelSamplingDiscreteFlow` with `CONST`, which Lumina 2 uses with shift 6
//! and multiplier 1. σ ∈ [0, 1] is the noise level: `x = σ·noise + (1 − σ)·data`.

use burn::tensor::{Tensor, backend::Backend};

use crate::SamplingError;

/// Number of entries in the discrete σ table.
pub const TABLE_LEN: usize = 1000;

/// `time_snr_shift`: `a·t / (1 + (a − 1)·t)` in f32, in ComfyUI's evaluation order.
pub fn time_snr_shift(shift: f32, t: f32) -> f32 {
    if shift == 1.0 {
        return t;
    }
    (shift * t) / (1.0 + (shift - 1.0) * t)
}

/// Flow model sampling with a shift and a timestep multiplier.
///
/// ```
/// use sakiko_sampling::FlowSampling;
/// let ms = FlowSampling::lumina2();
/// assert_eq!(ms.sigma_max(), 1.0);
/// assert!((ms.sigma_min() - 6.0 * 0.001 / 1.005).abs() < 1e-9);
/// assert_eq!(ms.timestep(0.25), 0.25);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSampling {
    shift: f32,
    multiplier: f32,
    table: Vec<f32>,
}

impl FlowSampling {
    /// Lumina 2 / Neta-Lumina / Sakiko-Lumina: shift 6, multiplier 1.
    pub fn lumina2() -> Self {
        Self::build(6.0, 1.0)
    }

    /// Another shift, multiplier 1 (ComfyUI's `ModelSamplingAuraFlow` node). A multiplier of 1000
    /// (the SD3 node) would feed `1000·σ` to a Lumina model and break it, so it is not offered here.
    pub fn with_shift(shift: f32) -> Result<Self, SamplingError> {
        Self::with_multiplier(shift, 1.0)
    }

    /// Any shift and multiplier, for other flow models.
    pub fn with_multiplier(shift: f32, multiplier: f32) -> Result<Self, SamplingError> {
        if !(shift.is_finite() && shift > 0.0) {
            return Err(SamplingError::InvalidParameter {
                name: "shift",
                value: shift.to_string(),
                expected: "a positive number",
            });
        }
        if !(multiplier.is_finite() && multiplier > 0.0) {
            return Err(SamplingError::InvalidParameter {
                name: "multiplier",
                value: multiplier.to_string(),
                expected: "a positive number",
            });
        }
        Ok(Self::build(shift, multiplier))
    }

    fn build(shift: f32, multiplier: f32) -> Self {
        let mut ms = Self {
            shift,
            multiplier,
            table: Vec::new(),
        };
        // `arange(1, 1001) / 1000` in f32, times the multiplier, through `sigma()`.
        ms.table = (1..=TABLE_LEN)
            .map(|i| ms.sigma((i as f32 / TABLE_LEN as f32) * multiplier))
            .collect();
        ms
    }

    /// The shift.
    pub fn shift(&self) -> f32 {
        self.shift
    }

    /// The 1000 σ values of the discrete table, increasing; the last is 1.
    pub fn table(&self) -> &[f32] {
        &self.table
    }

    /// The smallest tabulated σ (`table[0]`).
    pub fn sigma_min(&self) -> f32 {
        self.table[0]
    }

    /// The largest tabulated σ (`table[999]`, 1 for every shift).
    pub fn sigma_max(&self) -> f32 {
        self.table[TABLE_LEN - 1]
    }

    /// The timestep the scheduler formulas use for σ (`σ·multiplier`).
    pub fn timestep(&self, sigma: f32) -> f32 {
        sigma * self.multiplier
    }

    /// σ for a timestep: the shifted time.
    pub fn sigma(&self, timestep: f32) -> f32 {
        time_snr_shift(self.shift, timestep / self.multiplier)
    }

    /// σ at a fraction of the sampling run (ComfyUI's `percent_to_sigma`): 0 → 1, 1 → 0.
    pub fn percent_to_sigma(&self, percent: f32) -> f32 {
        if percent <= 0.0 {
            1.0
        } else if percent >= 1.0 {
            0.0
        } else {
            time_snr_shift(self.shift, 1.0 - percent)
        }
    }

    /// The x0 (data) estimate from a model output in ComfyUI's sign convention:
    /// `x − σ·out`, where `out = noise − data` (the negated Lumina velocity).
    pub fn denoised<B: Backend, const D: usize>(
        sigma: f32,
        model_output: Tensor<B, D>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        x - model_output.mul_scalar(sigma)
    }

    /// The sampler's starting point: `σ·noise + (1 − σ)·latent` (latent is zero for text-to-image).
    pub fn noise_scaling<B: Backend, const D: usize>(
        sigma: f32,
        noise: Tensor<B, D>,
        latent: Tensor<B, D>,
    ) -> Tensor<B, D> {
        noise.mul_scalar(sigma) + latent.mul_scalar(1.0 - sigma)
    }

    /// Undoes [`FlowSampling::noise_scaling`]'s scale at the end: `latent / (1 − σ)`.
    pub fn inverse_noise_scaling<B: Backend, const D: usize>(
        sigma: f32,
        latent: Tensor<B, D>,
    ) -> Tensor<B, D> {
        latent.div_scalar(1.0 - sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_one_is_identity() {
        assert_eq!(time_snr_shift(1.0, 0.3), 0.3);
        assert!((time_snr_shift(6.0, 0.5) - 6.0 * 0.5 / 3.5).abs() < 1e-7);
    }

    #[test]
    fn invalid_shift_is_an_error() {
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                FlowSampling::with_shift(bad),
                Err(SamplingError::InvalidParameter { name: "shift", .. })
            ));
        }
    }

    #[test]
    fn conversions_around_the_model() {
        use burn::backend::Flex;
        use burn::tensor::TensorData;
        let t = |v: &[f32]| {
            Tensor::<Flex, 1>::from_data(
                TensorData::new(v.to_vec(), [v.len()]),
                &Default::default(),
            )
        };
        let v = |t: Tensor<Flex, 1>| t.into_data().to_vec::<f32>().unwrap();
        // x = σ·noise + (1 − σ)·data with σ = 0.25, noise = 2, data = −1: x = 0.5 − 0.75 = −0.25.
        let x = FlowSampling::noise_scaling(0.25, t(&[2.0]), t(&[-1.0]));
        assert_eq!(v(x.clone()), [-0.25]);
        // The model's output in ComfyUI's sign is noise − data = 3; x0 = x − σ·3 = −1.
        assert_eq!(v(FlowSampling::denoised(0.25, t(&[3.0]), x)), [-1.0]);
        assert_eq!(
            v(FlowSampling::inverse_noise_scaling(0.5, t(&[1.0]))),
            [2.0]
        );
        assert_eq!(
            v(FlowSampling::inverse_noise_scaling(0.0, t(&[1.5]))),
            [1.5]
        );
    }

    #[test]
    fn percent_to_sigma_ends() {
        let ms = FlowSampling::lumina2();
        assert_eq!(ms.percent_to_sigma(0.0), 1.0);
        assert_eq!(ms.percent_to_sigma(1.0), 0.0);
        assert_eq!(ms.percent_to_sigma(0.5), time_snr_shift(6.0, 0.5));
    }
}
