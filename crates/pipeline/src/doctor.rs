//! The cross-backend parity suite for users (`sakiko doctor`): small models and the risky kernels
//! run on the chosen backend and dtype and on a reference backend in f32, in one process, from the
//! same seeded inputs and weights; each check reports its largest difference against a stated
//! tolerance.
//!
//! Burn's GPU kernels have open correctness bugs on some backends and dtypes (flash attention,
//! masks, fusion), and users run the one model definition on hardware nobody here has seen; this
//! is how they find out before a generation does.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, LinearConfig, PaddingConfig2d};
use burn::tensor::module::attention as masked_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, backend::Backend};
use safetensors::Dtype;
use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config};
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_sampling::{RandnKernel, TorchGenerator};
use sakiko_vae::{Vae, VaeConfig};
use sakiko_weights::WeightFile;
use serde::Serialize;

/// [`sakiko_ops::attention`]'s signature: `(q, k, v, kv_lens)`.
pub type AttentionFn<B> =
    fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Option<&[usize]>) -> Tensor<B, 4>;

/// The kernels the kernel checks call on the backend under test; tests swap one for a broken
/// version to show the doctor catches it.
pub struct Kernels<B: Backend> {
    /// Grouped-query attention with per-sample key lengths ([`sakiko_ops::attention`]).
    pub attention: AttentionFn<B>,
}

impl<B: Backend> Default for Kernels<B> {
    fn default() -> Self {
        Self {
            attention: sakiko_ops::attention,
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within tolerance.
    Pass,
    /// Beyond tolerance, non-finite, or the backend failed.
    Fail,
    /// Does not apply to this dtype.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked, e.g. `attention, batch 2, ragged keys`.
    pub name: String,
    /// Pass, fail or skip.
    pub status: Status,
    /// The largest |Δ| between the backend and the reference (`None` when it could not run).
    pub max_abs_diff: Option<f32>,
    /// The largest |Δ| accepted: the dtype's relative tolerance times the reference's largest
    /// magnitude.
    pub tolerance: f32,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
}

/// Whether every check passed (skipped ones do not count).
pub fn passed(checks: &[CheckResult]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Runs every check on `B` (`device`, computing in `dtype`) against `R` in f32 (`reference`),
/// with `kernels` for the kernel checks. Never panics: a backend that fails fails its check.
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::FloatDType;
/// use sakiko_pipeline::doctor;
///
/// let device = Default::default();
/// let checks =
///     doctor::run::<Flex, Flex>(&device, &device, FloatDType::F32, &doctor::Kernels::default());
/// assert!(doctor::passed(&checks), "{checks:#?}");
/// ```
pub fn run<B: Backend, R: Backend>(
    device: &B::Device,
    reference: &R::Device,
    dtype: FloatDType,
    kernels: &Kernels<B>,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let mut check = |probe: &dyn Probe<B, R>| {
        out.push(compare(probe, device, reference, dtype, kernels));
    };
    check(&Attention {
        batch: 1,
        lens: None,
    });
    check(&Attention {
        batch: 2,
        lens: None,
    });
    check(&Attention {
        batch: 2,
        lens: Some([77, 40]),
    });
    check(&MaskedAttention { batch: 1 });
    check(&MaskedAttention { batch: 2 });
    check(&Linear { rows: 1 });
    check(&Linear { rows: 33 });
    check(&RmsNorm);
    check(&GroupNorm);
    check(&Conv3x3);
    check(&OverflowGuard);
    check(&Denoiser);
    check(&TextEncoder);
    check(&VaeDecode);
    check(&VaeEncode);
    out
}

/// Whether a check exercises one kernel or a whole model (models accumulate more rounding).
#[derive(Clone, Copy)]
enum Kind {
    Kernel,
    Model,
}

/// Relative tolerance (of the reference's largest magnitude) per dtype, 3–8× the error Flex
/// shows in that dtype (a wrong kernel is off by order one; `tests/e2e/doctor.rs` prints both).
fn relative_tolerance(kind: Kind, dtype: FloatDType) -> f32 {
    match (kind, dtype) {
        (Kind::Kernel, FloatDType::BF16) => 2e-2,
        (Kind::Kernel, FloatDType::F16) => 5e-3,
        (Kind::Kernel, _) => 1e-3,
        (Kind::Model, FloatDType::BF16) => 5e-2,
        (Kind::Model, FloatDType::F16) => 1e-2,
        (Kind::Model, _) => 2e-3,
    }
}

/// A check, run the same way on the backend under test and on the reference.
trait Probe<B: Backend, R: Backend> {
    fn name(&self) -> String;
    fn kind(&self) -> Kind;
    /// Why the check does not apply to `dtype`, if it does not.
    fn skip(&self, _dtype: FloatDType) -> Option<&'static str> {
        None
    }
    fn target(&self, device: &B::Device, dtype: FloatDType, k: &Kernels<B>) -> Output;
    fn reference(&self, device: &R::Device) -> Output;
}

/// A probe's values (flattened, f32), or why it could not compute them.
type Output = Result<Vec<f32>, String>;

/// Implements [`Probe`] for a type with a generic `fn run<X: Backend>(&self, &X::Device,
/// FloatDType, &Kernels<X>) -> Output`, so one body serves both backends.
macro_rules! probe {
    ($ty:ty, $kind:expr, |$self_:ident| $name:expr $(, skip: $skip:expr)?) => {
        impl<B: Backend, R: Backend> Probe<B, R> for $ty {
            fn name(&$self_) -> String {
                $name
            }
            fn kind(&self) -> Kind {
                $kind
            }
            $(fn skip(&self, dtype: FloatDType) -> Option<&'static str> {
                $skip(dtype)
            })?
            fn target(&self, device: &B::Device, dtype: FloatDType, k: &Kernels<B>) -> Output {
                self.run::<B>(device, dtype, k)
            }
            fn reference(&self, device: &R::Device) -> Output {
                self.run::<R>(device, FloatDType::F32, &Kernels::default())
            }
        }
    };
}

fn compare<B: Backend, R: Backend>(
    probe: &dyn Probe<B, R>,
    device: &B::Device,
    reference: &R::Device,
    dtype: FloatDType,
    kernels: &Kernels<B>,
) -> CheckResult {
    let mut result = CheckResult {
        name: probe.name(),
        status: Status::Fail,
        max_abs_diff: None,
        tolerance: 0.0,
        detail: None,
    };
    if let Some(why) = probe.skip(dtype) {
        result.status = Status::Skip;
        result.detail = Some(why.into());
        return result;
    }
    let guarded = |f: &dyn Fn() -> Output| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            let message = crate::backend::payload_text(panic.as_ref());
            Err(format!("the backend panicked: {message}"))
        })
    };
    let expected = match guarded(&|| probe.reference(reference)) {
        Ok(v) => v,
        Err(e) => {
            result.detail = Some(format!("the reference failed: {e}"));
            return result;
        }
    };
    let got = match guarded(&|| probe.target(device, dtype, kernels)) {
        Ok(v) => v,
        Err(e) => {
            result.detail = Some(e);
            return result;
        }
    };
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    result.tolerance = relative_tolerance(probe.kind(), dtype) * scale.max(f32::MIN_POSITIVE);
    if got.len() != expected.len() {
        result.detail = Some(format!(
            "{} values, the reference has {}",
            got.len(),
            expected.len()
        ));
        return result;
    }
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        result.detail = Some(format!("non-finite value {} at index {i}", got[i]));
        return result;
    }
    let diff = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    result.max_abs_diff = Some(diff);
    if diff <= result.tolerance {
        result.status = Status::Pass;
    } else {
        result.detail = Some(format!(
            "off by {diff:.3e}, more than {:.3e}",
            result.tolerance
        ));
    }
    result
}

/// Standard-normal values from a fixed seed, made on the host (so both backends get the same).
fn randn<X: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    device: &X::Device,
) -> Tensor<X, D> {
    TorchGenerator::new(seed).randn_tensor(shape, RandnKernel::Scalar, device)
}

fn values<X: Backend, const D: usize>(x: Tensor<X, D>) -> Output {
    x.cast(FloatDType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| format!("{e:?}"))
}

/// Grouped-query attention as NextDiT and the VAE call it (4 query heads on 2 KV heads, 77 keys).
struct Attention {
    batch: usize,
    lens: Option<[usize; 2]>,
}

impl Attention {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, k: &Kernels<X>) -> Output {
        let b = self.batch;
        let input = |seed, heads| randn::<X, 4>(seed, [b, heads, 77, 16], device).cast(dtype);
        let lens = self.lens.as_ref().map(|l| &l[..b]);
        values((k.attention)(input(1, 4), input(2, 2), input(3, 2), lens))
    }
}

probe!(Attention, Kind::Kernel, |self| match self.lens {
    Some([a, b]) => format!("attention, batch {}, ragged keys ({a}, {b})", self.batch),
    None => format!("attention, batch {}", self.batch),
});

/// Burn's masked attention as Gemma calls it: causal and padding mask expanded over the heads,
/// softcap, scores in f32; prompts of 33 and (at batch 2) 20 tokens.
struct MaskedAttention {
    batch: usize,
}

impl MaskedAttention {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let (b, h, l) = (self.batch, 4, 33);
        let lens = [33, 20];
        let input = |seed| {
            randn::<X, 4>(seed, [b, h, l, 16], device)
                .cast(dtype)
                .cast(FloatDType::F32)
        };
        // Masked: keys after the query (causal) and past the prompt's end (padding).
        let mask: Vec<bool> = (0..b * l * l)
            .map(|n| {
                let (s, q, key) = (n / (l * l), n / l % l, n % l);
                key > q || key >= lens[s]
            })
            .collect();
        let mask = Tensor::<X, 3, Bool>::from_data(TensorData::new(mask, [b, l, l]), device);
        let mask = mask.unsqueeze_dim::<4>(1).expand([b, h, l, l]);
        let options = AttentionModuleOptions {
            scale: Some(0.25),
            softcap: Some(50.0),
            is_causal: false,
        };
        let o = masked_attention(input(4), input(5), input(6), Some(mask), None, options);
        values(o.cast(dtype))
    }
}

probe!(MaskedAttention, Kind::Kernel, |self| match self.batch {
    1 => "masked attention (causal), batch 1".into(),
    b => format!("masked attention (causal + padding), batch {b}"),
});

/// A linear layer with row-major weights, as `load_module` lays them out (one row is where
/// Burn 0.21's fusion once went wrong).
struct Linear {
    rows: usize,
}

impl Linear {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let mut layer = LinearConfig::new(64, 96).init::<X>(device);
        layer.weight = Param::from_tensor(randn::<X, 2>(7, [64, 96], device).cast(dtype) * 0.125);
        layer.bias = Some(Param::from_tensor(
            randn::<X, 1>(8, [96], device).cast(dtype),
        ));
        let x = randn::<X, 3>(9, [1, self.rows, 64], device).cast(dtype);
        values(layer.forward(x))
    }
}

probe!(Linear, Kind::Kernel, |self| format!(
    "linear, {} row{}",
    self.rows,
    if self.rows == 1 { "" } else { "s" }
));

/// RMSNorm in f32 as the models compute it (a reduction and a broadcast).
struct RmsNorm;

impl RmsNorm {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let x = (randn::<X, 3>(10, [2, 33, 64], device) * 3.0)
            .cast(dtype)
            .cast(FloatDType::F32);
        let w = randn::<X, 1>(11, [64], device).reshape([1, 1, 64]);
        let rms = (x.clone().powi_scalar(2).mean_dim(2) + 1e-6).sqrt();
        values((x / rms * w).cast(dtype))
    }
}

probe!(RmsNorm, Kind::Kernel, |self| "RMSNorm".into());

/// The VAE's GroupNorm (32 groups, in f32).
struct GroupNorm;

impl GroupNorm {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let mut norm = GroupNormConfig::new(32, 64).init::<X>(device);
        norm.gamma = Some(Param::from_tensor(randn::<X, 1>(12, [64], device)));
        norm.beta = Some(Param::from_tensor(randn::<X, 1>(13, [64], device)));
        let x = randn::<X, 4>(14, [2, 64, 12, 10], device)
            .cast(dtype)
            .cast(FloatDType::F32);
        values(norm.forward(x).cast(dtype))
    }
}

probe!(GroupNorm, Kind::Kernel, |self| "GroupNorm".into());

/// A 3×3 convolution with padding, as every VAE block runs it (`sakiko_ops::conv2d`).
struct Conv3x3;

impl Conv3x3 {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let mut conv = Conv2dConfig::new([32, 48], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<X>(device);
        conv.weight =
            Param::from_tensor(randn::<X, 4>(15, [48, 32, 3, 3], device).cast(dtype) * 0.06);
        conv.bias = Some(Param::from_tensor(
            randn::<X, 1>(16, [48], device).cast(dtype),
        ));
        let x = randn::<X, 4>(17, [1, 32, 20, 24], device).cast(dtype);
        values(sakiko_ops::conv2d(&conv, x))
    }
}

probe!(Conv3x3, Kind::Kernel, |self| "convolution 3×3".into());

/// ComfyUI's f16 overflow guard: values beyond f16's range become ±65504, NaN becomes 0. The
/// reference computes the same in f32 by hand.
struct OverflowGuard;

impl OverflowGuard {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let x = randn::<X, 1>(18, [256], device) * 1e5;
        if dtype == FloatDType::F16 {
            let nan = Tensor::<X, 1>::from_floats([f32::NAN], device);
            let x = Tensor::cat(vec![x, nan], 0).cast(FloatDType::F16);
            return values(sakiko_ops::clamp_fp16(x));
        }
        // The reference: f16 rounding of what f16 can hold, the guard's values for the rest.
        let v = values(x)?;
        let limit = f32::from(half::f16::MAX);
        Ok(v.into_iter()
            .map(|v| f32::from(half::f16::from_f32(v.clamp(-limit, limit))))
            .chain([0.0])
            .collect())
    }
}

probe!(OverflowGuard, Kind::Kernel, |self| "f16 overflow guard".into(), skip: |dtype| {
    (dtype != FloatDType::F16).then_some("applies to f16 only")
});

/// Seeded weights of order one in magnitude for a small model (`amplitude` bounds them).
fn weights(shapes: &[(String, Vec<usize>)], amplitude: f32) -> Result<WeightFile, String> {
    WeightFile::synthetic_with("<doctor>", shapes, Dtype::BF16, amplitude)
        .map_err(|e| e.to_string())
}

/// The tiny NextDiT, batch 2 with ragged captions (12 and 5 tokens), non-square latent.
struct Denoiser;

impl Denoiser {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let config = NextDitConfig::tiny();
        let file = weights(&config.tensor_shapes(), 0.2)?;
        let dit = NextDit::<X>::from_weights_as(&file, Some(config.clone()), dtype, device)
            .map_err(|e| e.to_string())?;
        let x = randn::<X, 4>(19, [2, config.in_channels, 8, 12], device);
        let cap = randn::<X, 3>(20, [2, 12, config.cap_feat_dim], device);
        let out = dit
            .forward(x, &[0.3, 0.8], cap, &[12, 5])
            .map_err(|e| e.to_string())?;
        values(out)
    }
}

probe!(Denoiser, Kind::Model, |self| {
    "NextDiT (tiny), batch 2, ragged captions".into()
});

/// The tiny Gemma-2, two prompts of 12 and 5 tokens in one batch (padding masked); positions
/// past a prompt's end are unspecified and not compared.
struct TextEncoder;

impl TextEncoder {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let config = Gemma2Config::tiny();
        let file = weights(&config.tensor_shapes(), 0.2)?;
        let gemma = Gemma2::<X>::from_weights_as(&file, Some(config), dtype, device)
            .map_err(|e| e.to_string())?;
        let ids = |n: u32| (0..n).map(|i| 2 + i * 37 % 997).collect::<Vec<u32>>();
        let hidden = gemma
            .forward(&[ids(12), ids(5)], EncoderOptions::comfyui(), device)
            .map_err(|e| e.to_string())?;
        let cond = hidden.conditioning();
        let mut v = values(cond.clone().narrow(0, 0, 1))?;
        v.extend(values(cond.narrow(0, 1, 1).narrow(1, 0, 5))?);
        Ok(v)
    }
}

probe!(TextEncoder, Kind::Model, |self| {
    "Gemma-2 (tiny), batch 2, ragged prompts".into()
});

fn tiny_vae<X: Backend>(device: &X::Device, dtype: FloatDType) -> Result<Vae<X>, String> {
    let config = VaeConfig::tiny();
    let file = weights(&config.tensor_shapes(), 0.1)?;
    Vae::<X>::from_weights_as(&file, Some(config), dtype, device).map_err(|e| e.to_string())
}

/// The tiny VAE decoding a 6×8 latent.
struct VaeDecode;

impl VaeDecode {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let vae = tiny_vae::<X>(device, dtype)?;
        let z = randn::<X, 4>(21, [1, vae.config().latent_channels, 6, 8], device);
        values(vae.decode(z).map_err(|e| e.to_string())?)
    }
}

probe!(VaeDecode, Kind::Model, |self| "VAE decoder (tiny)".into());

/// The tiny VAE encoding a 32×40 image.
struct VaeEncode;

impl VaeEncode {
    fn run<X: Backend>(&self, device: &X::Device, dtype: FloatDType, _: &Kernels<X>) -> Output {
        let vae = tiny_vae::<X>(device, dtype)?;
        let image = randn::<X, 4>(22, [1, 3, 32, 40], device).clamp(-1.0, 1.0);
        values(vae.encode(image).map_err(|e| e.to_string())?)
    }
}

probe!(VaeEncode, Kind::Model, |self| "VAE encoder (tiny)".into());
