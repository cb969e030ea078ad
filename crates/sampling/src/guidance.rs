//! Classifier-free guidance and its variants, on x0 predictions.

use burn::tensor::{Tensor, backend::Backend};

use crate::{Denoiser, SamplingError};

/// How the positive and negative predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    /// ComfyUI's CFG: `u + (c − u)·scale` on the x0 predictions (the same as mixing velocities).
    /// A scale of 1 skips the negative pass.
    Cfg {
        /// Guidance scale; the model card recommends 4.0–5.5.
        scale: f32,
    },
    /// ComfyUI's `RenormCFG` node for Lumina 2: CFG while σ < `trunc` (otherwise the positive
    /// prediction alone), and, if `renorm > 0`, the guided prediction's norm clamped to
    /// `renorm·‖c‖` per sample. (ComfyUI's node only works with batch size 1; this works per sample.)
    RenormCfg {
        /// Guidance scale.
        scale: f32,
        /// CFG runs while σ is below this (ComfyUI's default 100: always).
        trunc: f32,
        /// Norm clamp factor; 0 disables the clamp (ComfyUI's default 1).
        renorm: f32,
    },
    /// ComfyUI's `CFGZeroStar`: CFG plus an optimised rescale of the negative prediction.
    ZeroStar {
        /// Guidance scale.
        scale: f32,
    },
    /// diffusers' `Lumina2Pipeline`: CFG on velocities during the first `trunc_ratio` of the steps
    /// (`(i + 1)/N ≤ trunc_ratio`, and only when `scale > 1`), optionally rescaled to the norm of
    /// the positive velocity over the last (width) axis.
    Diffusers {
        /// Guidance scale.
        scale: f32,
        /// `cfg_normalization` (diffusers' default: true).
        normalization: bool,
        /// `cfg_trunc_ratio` (diffusers' default: 1, the official demo's 0.25).
        trunc_ratio: f32,
    },
}

/// The result of one guided denoiser evaluation.
#[derive(Debug, Clone)]
pub struct Guided<B: Backend> {
    /// The guided x0 prediction.
    pub denoised: Tensor<B, 4>,
    /// The negative prediction, when it was computed (CFG++ samplers need it).
    pub uncond: Option<Tensor<B, 4>>,
    /// Model calls this evaluation made.
    pub calls: usize,
}

impl Guidance {
    /// The variant's name, as the `sakiko` CLI spells it (`cfg`, `renorm-cfg`, `zero-star`,
    /// `diffusers`).
    pub fn name(&self) -> &'static str {
        match self {
            Guidance::Cfg { .. } => "cfg",
            Guidance::RenormCfg { .. } => "renorm-cfg",
            Guidance::ZeroStar { .. } => "zero-star",
            Guidance::Diffusers { .. } => "diffusers",
        }
    }

    /// The guidance scale.
    pub fn scale(&self) -> f32 {
        match *self {
            Guidance::Cfg { scale }
            | Guidance::RenormCfg { scale, .. }
            | Guidance::ZeroStar { scale }
            | Guidance::Diffusers { scale, .. } => scale,
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |name, value: f32, expected| {
            Err(SamplingError::InvalidParameter {
                name,
                value: value.to_string(),
                expected,
            })
        };
        let scale = self.scale();
        if !scale.is_finite() {
            return bad("cfg scale", scale, "a finite number");
        }
        match *self {
            Guidance::RenormCfg { trunc, renorm, .. } => {
                if trunc.is_nan() {
                    return bad("cfg_trunc", trunc, "a number");
                }
                if !(renorm.is_finite() && renorm >= 0.0) {
                    return bad("renorm_cfg", renorm, "a number ≥ 0");
                }
            }
            Guidance::Diffusers { trunc_ratio, .. } if !(0.0..=1.0).contains(&trunc_ratio) => {
                return bad("cfg_trunc_ratio", trunc_ratio, "a number in [0, 1]");
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the negative prediction is needed at this step. `force` is set by CFG++ samplers,
    /// which need it even at scale 1 (ComfyUI's `disable_cfg1_optimization`).
    fn wants_uncond(&self, step: usize, steps: usize, force: bool) -> bool {
        match *self {
            Guidance::Diffusers {
                scale, trunc_ratio, ..
            } => force || (scale > 1.0 && (step + 1) as f32 / steps as f32 <= trunc_ratio),
            _ => force || !is_close_to_one(self.scale()),
        }
    }

    /// Runs the denoiser once (or twice) and combines the predictions.
    pub fn evaluate<B: Backend, D: Denoiser<B> + ?Sized>(
        &self,
        denoiser: &mut D,
        x: &Tensor<B, 4>,
        sigma: f32,
        step: usize,
        steps: usize,
        force_uncond: bool,
    ) -> Result<Guided<B>, SamplingError> {
        let wrap = |source| SamplingError::Denoiser { step, source };
        if !self.wants_uncond(step, steps, force_uncond) {
            let c = denoiser
                .denoise(x, sigma, crate::Cond::Positive)
                .map_err(wrap)?;
            // Without a negative pass ComfyUI combines with a zero prediction; for scale 1 that is c.
            let denoised = match *self {
                Guidance::Diffusers { .. } => c,
                _ => self.combine(x, c.clone(), c.zeros_like(), sigma),
            };
            return Ok(Guided {
                denoised,
                uncond: None,
                calls: 1,
            });
        }
        let (c, u) = denoiser.denoise_pair(x, sigma).map_err(wrap)?;
        Ok(Guided {
            denoised: self.combine(x, c, u.clone(), sigma),
            uncond: Some(u),
            calls: 2,
        })
    }

    /// Combines a positive `c` and negative `u` x0 prediction for input `x` at σ.
    pub fn combine<B: Backend>(
        &self,
        x: &Tensor<B, 4>,
        c: Tensor<B, 4>,
        u: Tensor<B, 4>,
        sigma: f32,
    ) -> Tensor<B, 4> {
        match *self {
            Guidance::Cfg { scale } => cfg(c, u, scale),
            Guidance::RenormCfg {
                scale,
                trunc,
                renorm,
            } => {
                let half = if sigma < trunc {
                    let half = u.clone() + (c.clone() - u).mul_scalar(scale);
                    if renorm > 0.0 {
                        let max = per_sample_norm(&c).mul_scalar(renorm);
                        let norm = per_sample_norm(&half);
                        let factor = norm
                            .ones_like()
                            .mask_where(norm.clone().greater_equal(max.clone()), max / norm);
                        half * factor
                    } else {
                        half
                    }
                } else {
                    c
                };
                // ComfyUI returns through `x − (x − half)`, which re-rounds in f32.
                x.clone() - (x.clone() - half)
            }
            Guidance::ZeroStar { scale } => {
                let out = cfg(c.clone(), u.clone(), scale);
                let [b, ..] = x.dims();
                let pos = (x.clone() - c).reshape([b as i32, -1]);
                let neg = (x.clone() - u.clone()).reshape([b as i32, -1]);
                let dot = (pos * neg.clone()).sum_dim(1);
                let norm2 = neg.square().sum_dim(1).add_scalar(1e-8);
                let alpha: Tensor<B, 4> = (dot / norm2).reshape([b, 1, 1, 1]);
                out + u.clone() * (alpha.clone().sub_scalar(1.0))
                    + u.mul_scalar(scale) * (alpha.neg().add_scalar(1.0))
            }
            Guidance::Diffusers {
                scale,
                normalization,
                ..
            } => {
                let v_c = (x.clone() - c).div_scalar(sigma);
                let v_u = (x.clone() - u).div_scalar(sigma);
                let mut v = v_u.clone() + (v_c.clone() - v_u).mul_scalar(scale);
                if normalization {
                    let ratio =
                        v_c.square().sum_dim(3).sqrt() / v.clone().square().sum_dim(3).sqrt();
                    v = v * ratio;
                }
                x.clone() - v.mul_scalar(sigma)
            }
        }
    }
}

fn cfg<B: Backend>(c: Tensor<B, 4>, u: Tensor<B, 4>, scale: f32) -> Tensor<B, 4> {
    u.clone() + (c - u).mul_scalar(scale)
}

/// `‖t‖₂` over all but the batch dimension, shaped `[B, 1, 1, 1]`.
fn per_sample_norm<B: Backend>(t: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, ..] = t.dims();
    let flat: Tensor<B, 2> = t.clone().reshape([b as i32, -1]);
    flat.square().sum_dim(1).sqrt().reshape([b, 1, 1, 1])
}

/// Python's `math.isclose(scale, 1.0)` (relative tolerance 1e-9), in f64.
fn is_close_to_one(scale: f32) -> bool {
    (f64::from(scale) - 1.0).abs() <= 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn t(values: &[f32], shape: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
    }

    fn v(t: Tensor<Flex, 4>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn cfg_mixes_x0_predictions() {
        let x = t(&[0.0, 0.0], [1, 1, 1, 2]);
        let c = t(&[1.0, 2.0], [1, 1, 1, 2]);
        let u = t(&[0.5, 1.0], [1, 1, 1, 2]);
        // u + (c − u)·3 = [0.5 + 1.5, 1 + 3]
        close(
            &v(Guidance::Cfg { scale: 3.0 }.combine(&x, c, u, 0.5)),
            &[2.0, 4.0],
        );
    }

    #[test]
    fn renorm_clamps_per_sample_and_truncates_by_sigma() {
        let x = t(&[0.0; 4], [2, 1, 1, 2]);
        // Sample 0: c = (3, 4) (norm 5), u = 0: CFG ×2 gives (6, 8) (norm 10) → clamped to norm 5.
        // Sample 1: c = (1, 0), u = (1, 0): CFG gives (1, 0), under the clamp, unchanged.
        let c = t(&[3.0, 4.0, 1.0, 0.0], [2, 1, 1, 2]);
        let u = t(&[0.0, 0.0, 1.0, 0.0], [2, 1, 1, 2]);
        let g = Guidance::RenormCfg {
            scale: 2.0,
            trunc: 0.5,
            renorm: 1.0,
        };
        close(
            &v(g.combine(&x, c.clone(), u.clone(), 0.25)),
            &[3.0, 4.0, 1.0, 0.0],
        );
        // With renorm 0 there is no clamp.
        let g0 = Guidance::RenormCfg {
            scale: 2.0,
            trunc: 0.5,
            renorm: 0.0,
        };
        close(
            &v(g0.combine(&x, c.clone(), u.clone(), 0.25)),
            &[6.0, 8.0, 1.0, 0.0],
        );
        // At σ ≥ trunc only the positive prediction is used.
        close(&v(g.combine(&x, c, u, 0.5)), &[3.0, 4.0, 1.0, 0.0]);
    }

    #[test]
    fn zero_star_rescales_the_negative() {
        // x = 0: α = <c, u> / (‖u‖² + 1e-8). c = (2, 0), u = (1, 0): α ≈ 2.
        let x = t(&[0.0, 0.0], [1, 1, 1, 2]);
        let c = t(&[2.0, 0.0], [1, 1, 1, 2]);
        let u = t(&[1.0, 0.0], [1, 1, 1, 2]);
        // out = u + (c − u)·3 = 4; + u(α − 1) = +1; + 3u(1 − α) = −3 → 2.
        close(
            &v(Guidance::ZeroStar { scale: 3.0 }.combine(&x, c, u, 0.5)),
            &[2.0, 0.0],
        );
    }

    #[test]
    fn diffusers_normalises_over_the_last_axis() {
        // σ = 1, x = 0: v_c = −c, v_u = −u. c = (3, 4), u = (0, 0), scale 2: v = (−6, −8), rescaled
        // to ‖v_c‖ = 5 → (−3, −4), so x0 = x − σ·v = (3, 4).
        let x = t(&[0.0, 0.0], [1, 1, 1, 2]);
        let c = t(&[3.0, 4.0], [1, 1, 1, 2]);
        let u = t(&[0.0, 0.0], [1, 1, 1, 2]);
        let g = |normalization| Guidance::Diffusers {
            scale: 2.0,
            normalization,
            trunc_ratio: 1.0,
        };
        close(
            &v(g(true).combine(&x, c.clone(), u.clone(), 1.0)),
            &[3.0, 4.0],
        );
        close(&v(g(false).combine(&x, c, u, 1.0)), &[6.0, 8.0]);
    }

    #[test]
    fn diffusers_truncation_is_by_step_fraction() {
        let g = Guidance::Diffusers {
            scale: 4.0,
            normalization: true,
            trunc_ratio: 0.25,
        };
        let wants: Vec<bool> = (0..8).map(|i| g.wants_uncond(i, 8, false)).collect();
        assert_eq!(
            wants,
            [true, true, false, false, false, false, false, false]
        );
        let g1 = Guidance::Diffusers {
            scale: 1.0,
            normalization: true,
            trunc_ratio: 1.0,
        };
        assert!(!g1.wants_uncond(0, 8, false));
    }

    #[test]
    fn cfg_one_shortcut_is_exact_only() {
        assert!(!Guidance::Cfg { scale: 1.0 }.wants_uncond(0, 1, false));
        assert!(Guidance::Cfg { scale: 1.0 }.wants_uncond(0, 1, true));
        assert!(Guidance::Cfg { scale: 1.001 }.wants_uncond(0, 1, false));
    }
}
