//! ComfyUI's samplers, run against any [`Denoiser`].
//!
//! Every formula follows `comfy/k_diffusion/sampling.py`; scalar coefficients are computed in f32
//! on the host, as ComfyUI computes them on 0-d f32 tensors.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use burn::tensor::{Tensor, backend::Backend};

use crate::{Denoiser, Guidance, RandnKernel, SamplingError, TorchGenerator};

/// ComfyUI's sampler names (the subset that suits flow models like Lumina 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampler {
    /// First-order Euler. Deterministic.
    Euler,
    /// Euler ancestral, in the rectified-flow form ComfyUI takes for this model. The model card's
    /// recommendation.
    EulerAncestral,
    /// Second-order multistep (RES). Deterministic.
    ResMultistep,
    /// `res_multistep` with ancestral noise (η = 1).
    ResMultistepAncestral,
    /// `res_multistep` with CFG++ (the step follows the negative prediction).
    ResMultistepCfgPp,
    /// `res_multistep_ancestral` with CFG++.
    ResMultistepAncestralCfgPp,
    /// DPM-Solver++(2M). Deterministic.
    Dpmpp2m,
    /// Heun's second-order method (two model evaluations per step). Deterministic.
    Heun,
}

impl Sampler {
    /// All samplers.
    pub const ALL: [Sampler; 8] = [
        Sampler::Euler,
        Sampler::EulerAncestral,
        Sampler::ResMultistep,
        Sampler::ResMultistepAncestral,
        Sampler::ResMultistepCfgPp,
        Sampler::ResMultistepAncestralCfgPp,
        Sampler::Dpmpp2m,
        Sampler::Heun,
    ];

    /// ComfyUI's name.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Euler => "euler",
            Sampler::EulerAncestral => "euler_ancestral",
            Sampler::ResMultistep => "res_multistep",
            Sampler::ResMultistepAncestral => "res_multistep_ancestral",
            Sampler::ResMultistepCfgPp => "res_multistep_cfg_pp",
            Sampler::ResMultistepAncestralCfgPp => "res_multistep_ancestral_cfg_pp",
            Sampler::Dpmpp2m => "dpmpp_2m",
            Sampler::Heun => "heun",
        }
    }

    /// ComfyUI's default η: 1 for the ancestral samplers, 0 otherwise.
    pub fn default_eta(self) -> f32 {
        match self {
            Sampler::EulerAncestral
            | Sampler::ResMultistepAncestral
            | Sampler::ResMultistepAncestralCfgPp => 1.0,
            _ => 0.0,
        }
    }

    /// Whether this is a CFG++ sampler (it always runs the negative pass).
    pub fn cfg_pp(self) -> bool {
        matches!(
            self,
            Sampler::ResMultistepCfgPp | Sampler::ResMultistepAncestralCfgPp
        )
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sampler {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("sampler", s, &Self::ALL, |x| x.name())
    }
}

/// Fresh Gaussian noise for the ancestral samplers.
pub trait NoiseSource<B: Backend> {
    /// Standard normal noise shaped like `like`, on its device.
    fn noise(&mut self, like: &Tensor<B, 4>) -> Tensor<B, 4>;
}

/// Ancestral noise from PyTorch's CPU generator, seeded with the generation seed.
///
/// ComfyUI creates this generator with the same seed on the latent's device; on a GPU that is
/// CUDA's Philox generator, whose stream is not reproduced here, so ancestral samplers match
/// ComfyUI-on-CPU exactly and ComfyUI-on-GPU only in distribution. Drawing on the host makes the
/// noise identical on every Burn backend.
#[derive(Debug, Clone)]
pub struct TorchNoise {
    generator: TorchGenerator,
    kernel: RandnKernel,
}

impl TorchNoise {
    /// A generator seeded like `torch.Generator().manual_seed(seed)`.
    pub fn new(seed: u64, kernel: RandnKernel) -> Self {
        Self {
            generator: TorchGenerator::new(seed),
            kernel,
        }
    }
}

impl<B: Backend> NoiseSource<B> for TorchNoise {
    fn noise(&mut self, like: &Tensor<B, 4>) -> Tensor<B, 4> {
        self.generator
            .randn_tensor(like.dims(), self.kernel, &like.device())
    }
}

/// Sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// The sampler.
    pub sampler: Sampler,
    /// How positive and negative predictions combine.
    pub guidance: Guidance,
    /// Ancestral noise amount; `None` takes the sampler's default ([`Sampler::default_eta`]).
    pub eta: Option<f32>,
    /// Ancestral noise multiplier (ComfyUI's `s_noise`, default 1).
    pub s_noise: f32,
}

impl SamplerConfig {
    /// `sampler` with `guidance`, default η and `s_noise`.
    pub fn new(sampler: Sampler, guidance: Guidance) -> Self {
        Self {
            sampler,
            guidance,
            eta: None,
            s_noise: 1.0,
        }
    }
}

/// What the per-step callback sees, after each step.
#[derive(Debug)]
pub struct StepInfo<'a, B: Backend> {
    /// The step just taken (from 0).
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// σ at the start of the step.
    pub sigma: f32,
    /// σ at the end of the step.
    pub sigma_next: f32,
    /// The latents after the step.
    pub x: &'a Tensor<B, 4>,
    /// The guided x0 prediction of the step (a cheap preview of the final image).
    pub denoised: &'a Tensor<B, 4>,
    /// Model calls so far.
    pub model_calls: usize,
}

/// Checks a schedule: at least two values, finite, in [0, 1], non-increasing, zero only at the end.
pub fn validate_sigmas(sigmas: &[f32]) -> Result<(), SamplingError> {
    let bad = |why: String| Err(SamplingError::InvalidSchedule(why));
    if sigmas.len() < 2 {
        return bad(format!(
            "{} value(s); a schedule needs at least 2",
            sigmas.len()
        ));
    }
    for (i, &s) in sigmas.iter().enumerate() {
        if !(0.0..=1.0).contains(&s) {
            return bad(format!("σ[{i}] = {s} is outside [0, 1]"));
        }
        if i + 1 < sigmas.len() && s == 0.0 {
            return bad(format!("σ[{i}] = 0 before the last step"));
        }
        if i > 0 && s > sigmas[i - 1] {
            return bad(format!(
                "σ[{i}] = {s} is above σ[{}] = {}",
                i - 1,
                sigmas[i - 1]
            ));
        }
    }
    Ok(())
}

/// Runs `config.sampler` from `x` (already noised to `sigmas[0]`, see
/// [`crate::FlowSampling::noise_scaling`]) down the schedule, calling `on_step` after every step;
/// `ControlFlow::Break` cancels.
pub fn sample<B, D, N, F>(
    config: &SamplerConfig,
    denoiser: &mut D,
    x: Tensor<B, 4>,
    sigmas: &[f32],
    noise: &mut N,
    mut on_step: F,
) -> Result<Tensor<B, 4>, SamplingError>
where
    B: Backend,
    D: Denoiser<B> + ?Sized,
    N: NoiseSource<B> + ?Sized,
    F: FnMut(&StepInfo<'_, B>) -> ControlFlow<()>,
{
    validate_sigmas(sigmas)?;
    config.guidance.validate()?;
    let eta = config.eta.unwrap_or(config.sampler.default_eta());
    if !(eta.is_finite() && eta >= 0.0 && config.s_noise.is_finite()) {
        return Err(SamplingError::InvalidParameter {
            name: "eta / s_noise",
            value: format!("{eta} / {}", config.s_noise),
            expected: "finite numbers, η ≥ 0",
        });
    }
    let mut run = Run {
        config,
        eta,
        sigmas,
        steps: sigmas.len() - 1,
        calls: 0,
    };
    let mut x = x;
    let mut history: Option<History<B>> = None;
    for i in 0..run.steps {
        let (next, denoised) = run.step(denoiser, noise, i, x, &mut history)?;
        x = next;
        let info = StepInfo {
            step: i,
            steps: run.steps,
            sigma: sigmas[i],
            sigma_next: sigmas[i + 1],
            x: &x,
            denoised: &denoised,
            model_calls: run.calls,
        };
        if on_step(&info).is_break() && i + 1 < run.steps {
            return Err(SamplingError::Cancelled {
                step: i + 1,
                steps: run.steps,
            });
        }
    }
    Ok(x)
}

/// What multistep samplers carry from one step to the next.
struct History<B: Backend> {
    denoised: Tensor<B, 4>,
    sigma_down: f32,
}

struct Run<'a> {
    config: &'a SamplerConfig,
    eta: f32,
    sigmas: &'a [f32],
    steps: usize,
    calls: usize,
}

impl Run<'_> {
    fn guided<B: Backend, D: Denoiser<B> + ?Sized>(
        &mut self,
        denoiser: &mut D,
        x: &Tensor<B, 4>,
        sigma: f32,
        step: usize,
    ) -> Result<crate::Guided<B>, SamplingError> {
        let cfg_pp = self.config.sampler.cfg_pp();
        let g = self
            .config
            .guidance
            .evaluate(denoiser, x, sigma, step, self.steps, cfg_pp)?;
        self.calls += g.calls;
        Ok(g)
    }

    /// One step: returns the new latents and the step's guided prediction.
    fn step<B, D, N>(
        &mut self,
        denoiser: &mut D,
        noise: &mut N,
        i: usize,
        x: Tensor<B, 4>,
        history: &mut Option<History<B>>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), SamplingError>
    where
        B: Backend,
        D: Denoiser<B> + ?Sized,
        N: NoiseSource<B> + ?Sized,
    {
        let (s, s_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let (eta, s_noise) = (self.eta, self.config.s_noise);
        let g = self.guided(denoiser, &x, s, i)?;
        let den = g.denoised.clone();
        let x = match self.config.sampler {
            Sampler::Euler => euler(x, &den, s, s_next),
            Sampler::EulerAncestral => {
                if s_next == 0.0 {
                    den.clone()
                } else {
                    let sigma_down = s_next * (1.0 + (s_next / s - 1.0) * eta);
                    let (alpha_next, alpha_down) = (1.0 - s_next, 1.0 - sigma_down);
                    let renoise = (s_next * s_next
                        - sigma_down * sigma_down * (alpha_next * alpha_next)
                            / (alpha_down * alpha_down))
                        .sqrt();
                    let q = sigma_down / s;
                    let x = x.mul_scalar(q) + den.clone().mul_scalar(1.0 - q);
                    if eta > 0.0 {
                        let n = noise.noise(&x);
                        x.mul_scalar(alpha_next / alpha_down)
                            + n.mul_scalar(s_noise).mul_scalar(renoise)
                    } else {
                        x
                    }
                }
            }
            Sampler::ResMultistep
            | Sampler::ResMultistepAncestral
            | Sampler::ResMultistepCfgPp
            | Sampler::ResMultistepAncestralCfgPp => {
                let cfg_pp = self.config.sampler.cfg_pp();
                // CFG++ follows the negative prediction; it always exists for these samplers.
                let uc = if cfg_pp {
                    g.uncond.clone().unwrap_or_else(|| den.clone())
                } else {
                    den.clone()
                };
                let (sigma_down, sigma_up) = ancestral_step(s, s_next, eta);
                let mut x = match history.as_ref() {
                    Some(h) if sigma_down != 0.0 => {
                        let t = |sigma: f32| -sigma.ln();
                        let (tc, to, tn, tp) =
                            (t(s), t(h.sigma_down), t(sigma_down), t(self.sigmas[i - 1]));
                        let hh = tn - tc;
                        let c2 = (tp - to) / hh;
                        let phi1 = |z: f32| z.exp_m1() / z;
                        let phi2 = |z: f32| (phi1(z) - 1.0) / z;
                        let (p1, p2) = (phi1(-hh), phi2(-hh));
                        let b1 = nan_to_zero(p1 - p2 / c2);
                        let b2 = nan_to_zero(p2 / c2);
                        let x = if cfg_pp {
                            x + (den.clone() - uc.clone())
                        } else {
                            x
                        };
                        let mix = uc.clone().mul_scalar(b1) + h.denoised.clone().mul_scalar(b2);
                        x.mul_scalar((-hh).exp()) + mix.mul_scalar(hh)
                    }
                    _ => {
                        if cfg_pp {
                            den.clone() + (x - uc.clone()).div_scalar(s).mul_scalar(sigma_down)
                        } else {
                            let d = (x.clone() - den.clone()).div_scalar(s);
                            x + d.mul_scalar(sigma_down - s)
                        }
                    }
                };
                if s_next > 0.0 && eta > 0.0 {
                    let n = noise.noise(&x);
                    x = x + n.mul_scalar(s_noise).mul_scalar(sigma_up);
                }
                *history = Some(History {
                    denoised: uc,
                    sigma_down,
                });
                x
            }
            Sampler::Dpmpp2m => {
                let t = |sigma: f32| -sigma.ln();
                let (tc, tn) = (t(s), t(s_next));
                let h = tn - tc;
                let ratio = (-tn).exp() / (-tc).exp();
                let den_d = match history.as_ref() {
                    Some(prev) if s_next != 0.0 => {
                        let r = (tc - t(self.sigmas[i - 1])) / h;
                        den.clone().mul_scalar(1.0 + 1.0 / (2.0 * r))
                            - prev.denoised.clone().mul_scalar(1.0 / (2.0 * r))
                    }
                    _ => den.clone(),
                };
                *history = Some(History {
                    denoised: den.clone(),
                    sigma_down: s_next,
                });
                x.mul_scalar(ratio) - den_d.mul_scalar((-h).exp_m1())
            }
            Sampler::Heun => {
                let d = (x.clone() - den.clone()).div_scalar(s);
                let dt = s_next - s;
                if s_next == 0.0 {
                    x + d.mul_scalar(dt)
                } else {
                    let x2 = x.clone() + d.clone().mul_scalar(dt);
                    let den2 = self.guided(denoiser, &x2, s_next, i)?.denoised;
                    let d2 = (x2 - den2).div_scalar(s_next);
                    x + (d + d2).div_scalar(2.0).mul_scalar(dt)
                }
            }
        };
        Ok((x, den))
    }
}

/// `x + (x − den)/σ · (σ_next − σ)`.
fn euler<B: Backend>(x: Tensor<B, 4>, den: &Tensor<B, 4>, s: f32, s_next: f32) -> Tensor<B, 4> {
    let d = (x.clone() - den.clone()).div_scalar(s);
    x + d.mul_scalar(s_next - s)
}

/// k-diffusion's `get_ancestral_step` (the EDM/VP form, used by `res_multistep` even for flow).
fn ancestral_step(from: f32, to: f32, eta: f32) -> (f32, f32) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let up = to.min(eta * (to * to * (from * from - to * to) / (from * from)).sqrt());
    let down = (to * to - up * up).sqrt();
    (down, up)
}

fn nan_to_zero(v: f32) -> f32 {
    if v.is_nan() { 0.0 } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Sampler::ALL {
            assert_eq!(s.name().parse::<Sampler>().unwrap(), s);
        }
        assert!(matches!(
            "euler_a".parse::<Sampler>(),
            Err(SamplingError::UnknownName {
                suggestion: Some("euler"),
                ..
            })
        ));
        assert_eq!(
            "Euler-Ancestral".parse::<Sampler>().unwrap(),
            Sampler::EulerAncestral
        );
    }

    #[test]
    fn schedule_validation() {
        assert!(validate_sigmas(&[1.0, 0.5, 0.0]).is_ok());
        for bad in [
            &[1.0][..],
            &[1.0, 0.0, 0.0],
            &[0.5, 0.7, 0.0],
            &[1.5, 0.0],
            &[1.0, f32::NAN, 0.0],
        ] {
            assert!(
                matches!(validate_sigmas(bad), Err(SamplingError::InvalidSchedule(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ancestral_step_matches_hand_values() {
        assert_eq!(ancestral_step(1.0, 0.5, 0.0), (0.5, 0.0));
        let (down, up) = ancestral_step(1.0, 0.5, 1.0);
        // up = sqrt(0.25 · 0.75) = 0.4330127, down = sqrt(0.25 − 0.1875) = 0.25
        assert!((up - 0.433_012_7).abs() < 1e-6 && (down - 0.25).abs() < 1e-6);
    }
}
