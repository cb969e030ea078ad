//! Every sampler and guidance variant against a toy analytic denoiser, compared with the same
//! formulas run by PyTorch (`tools/reference/sampling.py`): trajectories within 1e-5.

mod common;

use std::ops::ControlFlow;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::{Fixtures, max_abs_diff};
use sakiko_sampling::{
    Cond, DenoiseError, Denoiser, FlowSampling, Guidance, RandnKernel, Sampler, SamplerConfig,
    SamplingError, TorchGenerator, TorchNoise, sample,
};

type B = Flex;
const TOL: f32 = 1e-5;

fn tensor(values: Vec<f32>, shape: &[usize]) -> Tensor<B, 4> {
    let shape: [usize; 4] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn values(t: &Tensor<B, 4>) -> Vec<f32> {
    t.to_data().to_vec().unwrap()
}

/// x0 ~ N(μ, 0.25) elementwise; for x = σ·ε + (1 − σ)·x0 the posterior mean is
/// μ + k·(x − (1 − σ)·μ) with k = (1 − σ)·0.25 / ((1 − σ)²·0.25 + σ²).
struct Gaussian {
    mu_cond: Tensor<B, 4>,
    mu_uncond: Tensor<B, 4>,
    calls: usize,
}

impl Denoiser<B> for Gaussian {
    fn denoise(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
        cond: Cond,
    ) -> Result<Tensor<B, 4>, DenoiseError> {
        self.calls += 1;
        let mu = match cond {
            Cond::Positive => &self.mu_cond,
            Cond::Negative => &self.mu_uncond,
        };
        let s2 = 0.25f32;
        let a = 1.0 - sigma;
        let k = (a * s2) / (a * a * s2 + sigma * sigma);
        Ok(mu.clone() + (x.clone() - mu.clone().mul_scalar(a)).mul_scalar(k))
    }
}

fn guidance(name: &str) -> Guidance {
    match name {
        "cfg1" => Guidance::Cfg { scale: 1.0 },
        "renorm" => Guidance::RenormCfg {
            scale: 5.0,
            trunc: 0.5,
            renorm: 1.0,
        },
        "zero_star" => Guidance::ZeroStar { scale: 4.0 },
        "diffusers" => Guidance::Diffusers {
            scale: 4.0,
            normalization: true,
            trunc_ratio: 0.5,
        },
        _ if name.starts_with("cfg4.5") => Guidance::Cfg { scale: 4.5 },
        other => panic!("unknown guidance {other}"),
    }
}

#[test]
fn initial_noise_is_torch_randn() {
    let fx = Fixtures::load();
    let want = fx.values("toy/noise");
    let got = TorchGenerator::new(2024).randn(want.len(), RandnKernel::Avx2);
    assert_eq!(got, want);
}

#[test]
fn trajectories_match_pytorch() {
    let fx = Fixtures::load();
    let (mu_c, shape) = fx.f32("toy/mu_cond");
    let mu_u = fx.values("toy/mu_uncond");
    let latent = tensor(fx.values("toy/latent"), &shape);
    let noise = tensor(fx.values("toy/noise"), &shape);
    let names: Vec<String> = fx
        .names("trajectory/")
        .into_iter()
        .filter(|n| n.matches('/').count() == 2)
        .collect();
    assert_eq!(names.len(), 16, "{names:?}");
    let mut report = Vec::new();
    for name in names {
        let parts: Vec<&str> = name.split('/').collect();
        let sampler: Sampler = parts[1].parse().unwrap();
        let mut config = SamplerConfig::new(sampler, guidance(parts[2]));
        if parts[2].contains("eta0.5") {
            (config.eta, config.s_noise) = (Some(0.5), 0.9);
        }
        let sigmas = fx.values(&format!("{name}/sigmas"));
        let (want, want_shape) = fx.f32(&name);
        assert_eq!(want_shape[0], sigmas.len());

        let start = if parts[2].ends_with("img2img") {
            latent.clone()
        } else {
            latent.zeros_like()
        };
        let x = FlowSampling::noise_scaling(sigmas[0], noise.clone(), start);
        let mut model = Gaussian {
            mu_cond: tensor(mu_c.clone(), &shape),
            mu_uncond: tensor(mu_u.clone(), &shape),
            calls: 0,
        };
        let mut states = values(&x);
        let mut ancestral = TorchNoise::new(2024, RandnKernel::Avx2);
        let out = sample(&config, &mut model, x, &sigmas, &mut ancestral, |step| {
            states.extend(values(step.x));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(values(&out), states[states.len() - values(&out).len()..]);
        let diff = max_abs_diff(&states, &want);
        assert!(diff <= TOL, "{name}: max |diff| {diff:e}");
        assert_eq!(
            model.calls as i64,
            fx.i64(&format!("{name}/calls")),
            "{name}: model calls"
        );
        report.push(format!("{name}: {diff:.1e}"));
    }
    println!("{}", report.join("\n"));
}

/// Counts calls and returns x unchanged (x0 = x).
struct Counting(usize);

impl Denoiser<B> for Counting {
    fn denoise(&mut self, x: &Tensor<B, 4>, _: f32, _: Cond) -> Result<Tensor<B, 4>, DenoiseError> {
        self.0 += 1;
        Ok(x.clone())
    }
}

fn run(
    sampler: Sampler,
    guidance: Guidance,
    model: &mut dyn Denoiser<B>,
) -> Result<Tensor<B, 4>, SamplingError> {
    let x = tensor(vec![0.5; 16], &[1, 1, 4, 4]);
    let mut noise = TorchNoise::new(0, RandnKernel::Avx2);
    sample(
        &SamplerConfig::new(sampler, guidance),
        model,
        x,
        &[1.0, 0.75, 0.5, 0.25, 0.0],
        &mut noise,
        |_| ControlFlow::Continue(()),
    )
}

#[test]
fn cfg_one_makes_one_model_call_per_step() {
    let mut m = Counting(0);
    run(Sampler::Euler, Guidance::Cfg { scale: 1.0 }, &mut m).unwrap();
    assert_eq!(m.0, 4);
    let mut m = Counting(0);
    run(Sampler::Euler, Guidance::Cfg { scale: 4.5 }, &mut m).unwrap();
    assert_eq!(m.0, 8);
    // CFG++ needs the negative prediction even at scale 1 (ComfyUI disables the shortcut).
    let mut m = Counting(0);
    run(
        Sampler::ResMultistepCfgPp,
        Guidance::Cfg { scale: 1.0 },
        &mut m,
    )
    .unwrap();
    assert_eq!(m.0, 8);
    // Heun evaluates twice per step except the last.
    let mut m = Counting(0);
    run(Sampler::Heun, Guidance::Cfg { scale: 1.0 }, &mut m).unwrap();
    assert_eq!(m.0, 7);
}

#[test]
fn callback_can_cancel() {
    let x = tensor(vec![0.5; 16], &[1, 1, 4, 4]);
    let mut noise = TorchNoise::new(0, RandnKernel::Avx2);
    let mut m = Counting(0);
    let config = SamplerConfig::new(Sampler::Euler, Guidance::Cfg { scale: 1.0 });
    let err = sample(
        &config,
        &mut m,
        x,
        &[1.0, 0.75, 0.5, 0.25, 0.0],
        &mut noise,
        |step| {
            if step.step == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, SamplingError::Cancelled { step: 2, steps: 4 }),
        "{err}"
    );
    assert_eq!(m.0, 2);
}

struct Failing;

impl Denoiser<B> for Failing {
    fn denoise(&mut self, _: &Tensor<B, 4>, _: f32, _: Cond) -> Result<Tensor<B, 4>, DenoiseError> {
        Err("out of memory".into())
    }
}

#[test]
fn denoiser_errors_and_bad_input_are_typed() {
    let err = run(Sampler::Euler, Guidance::Cfg { scale: 4.0 }, &mut Failing).unwrap_err();
    assert!(matches!(err, SamplingError::Denoiser { step: 0, .. }));
    assert_eq!(err.to_string(), "denoiser failed at step 0: out of memory");

    let err = run(
        Sampler::Euler,
        Guidance::Cfg { scale: f32::NAN },
        &mut Counting(0),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SamplingError::InvalidParameter {
            name: "cfg scale",
            ..
        }
    ));
    let err = run(
        Sampler::Euler,
        Guidance::Diffusers {
            scale: 4.0,
            normalization: true,
            trunc_ratio: 2.0,
        },
        &mut Counting(0),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SamplingError::InvalidParameter {
            name: "cfg_trunc_ratio",
            ..
        }
    ));
}
