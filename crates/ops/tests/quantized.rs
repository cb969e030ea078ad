//! Linear layers with GGUF Q8_0 weights kept quantised (`sakiko_weights`' `with_q8_0_kept`): a
//! Burn quantised `[out, in]` tensor (int8 values, an f32 scale per 32 inputs, packed in `u32`)
//! whose transposed view is the layer's weight, multiplied by [`sakiko_ops::linear`] through
//! CubeCL's quantised GEMM, against the same layer with the dequantised weight. (Flex is not
//! covered: it requantises a transposed block-quantised tensor, lossily, so the pipeline never
//! keeps weights quantised there.)
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::quantization::{QuantLevel, QuantParam, QuantScheme, QuantStore, QuantValue};
use burn::tensor::{DType, FloatDType, Tensor, TensorData, backend::Backend};

mod common;
use common::{tensor, values};

const ROWS: [usize; 5] = [1, 2, 3, 14, 128];

/// Q8_0-like blocks: `[out, in]` int8 values (−128 included) and a scale per 32 along `in`.
fn q8_0(out: usize, inp: usize, seed: u32) -> (Vec<i8>, Vec<f32>) {
    let q = values(out * inp, seed)
        .iter()
        .map(|v| (v * 64.0).round().clamp(-128.0, 127.0) as i8)
        .collect();
    let scales = values(out * inp / 32, seed + 1)
        .iter()
        .map(|v| 0.001 + v.abs() * 0.01)
        .collect();
    (q, scales)
}

/// The two layers: the kept quantised weight, and the dequantised one row-major `[in, out]`
/// (as `load_module` gives float weights); both with the same bias.
fn layers<B: Backend>(dev: &B::Device) -> [Linear<B>; 2] {
    let (out, inp) = (96, 256);
    let (q, scales) = q8_0(out, inp, 7);
    let w: Vec<f32> = (q.iter().enumerate())
        .map(|(i, &v)| v as f32 * scales[i / 32])
        .collect();
    let scheme = QuantScheme::default()
        .with_value(QuantValue::Q8F)
        .with_store(QuantStore::PackedU32(0))
        .with_param(QuantParam::F32)
        .with_level(QuantLevel::block([1, 32]));
    let data = TensorData::quantized(q, [out, inp], scheme, &scales);
    let kept = Tensor::<B, 2>::from_data(data, dev).transpose();
    assert!(matches!(kept.dtype(), DType::QFloat(_)));
    let dense = Tensor::<B, 2>::from_data(TensorData::new(w, [out, inp]), dev).transpose();
    let dense = Tensor::from_data(dense.into_data(), dev);
    let bias = Param::from_tensor(tensor::<B, 1>([out], 5, dev));
    [kept, dense].map(|weight| Linear {
        weight: Param::from_tensor(weight),
        bias: Some(bias.clone()),
    })
}

fn max_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    let [a, b] = [a, b].map(|t| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max |Δ| of the kept layer against the dequantised one for each of [`ROWS`] (two rows and
/// more as a batch of 2), and, for one row, of Burn's plain `x·W + b` on the kept weight.
fn errors<B: Backend>(dev: &B::Device) -> (Vec<f32>, f32) {
    let [kept, dense] = layers::<B>(dev);
    let errors = ROWS
        .iter()
        .map(|&rows| {
            let x = tensor::<B, 3>([rows.min(2), rows.div_ceil(2), 256], 3, dev);
            let got = sakiko_ops::linear(&kept, x.clone());
            max_diff(got, sakiko_ops::linear(&dense, x))
        })
        .collect();
    let x = tensor::<B, 2>([1, 256], 3, dev);
    let bias = kept
        .bias
        .as_ref()
        .map(|b| b.val().unsqueeze_dim(0))
        .expect("bias");
    let plain = x.clone().matmul(kept.weight.val()) + bias;
    (errors, max_diff(plain, sakiko_ops::linear(&dense, x)))
}

/// The kept layer in f16 (f16 input and bias): its output stays f16; max |Δ| against the f32
/// dequantised layer.
fn f16_error<B: Backend>(dev: &B::Device) -> f32 {
    let [mut kept, dense] = layers::<B>(dev);
    kept.bias = kept
        .bias
        .map(|b| Param::from_tensor(b.val().cast(FloatDType::F16)));
    let x = tensor::<B, 3>([2, 7, 256], 3, dev);
    let half = sakiko_ops::linear(&kept, x.clone().cast(FloatDType::F16));
    assert_eq!(half.dtype(), DType::F16);
    max_diff(half, sakiko_ops::linear(&dense, x))
}

#[cfg(feature = "wgpu")]
#[test]
fn q8_0_weights_kept_quantised_on_wgpu() {
    let (errors, plain) = errors::<burn::backend::Wgpu>(&Default::default());
    println!("wgpu, rows {ROWS:?}: max |Δ| {errors:?}; plain x·W + b at one row: {plain}");
    // Outputs reach ≈±60; f32 sums in another order stay below 1e-3.
    assert!(errors.iter().all(|&e| e < 1e-3), "{errors:?}");
    // Negative control: without the one-row guard the fused bias is wrong (if this starts to
    // fail, Burn fixed it).
    assert!(plain > 1.0, "{plain}");
    let half = f16_error::<burn::backend::Wgpu>(&Default::default());
    println!("wgpu, f16 input: max |Δ| {half} against f32");
    // f16 rounds outputs of ±60 to steps of 1/32, and its input to 11 bits.
    assert!(half < 0.25, "{half}");
}

/// On CUDA the guarded layer must be right; the unguarded one-row case is printed
/// (tools/gpu-check records it).
#[cfg(feature = "cuda")]
#[test]
fn q8_0_weights_kept_quantised_on_cuda() {
    let (errors, plain) = errors::<burn::backend::Cuda>(&Default::default());
    println!("cuda, rows {ROWS:?}: max |Δ| {errors:?}; plain x·W + b at one row: {plain}");
    assert!(errors.iter().all(|&e| e < 1e-3), "{errors:?}");
    let half = f16_error::<burn::backend::Cuda>(&Default::default());
    println!("cuda, f16 input: max |Δ| {half} against f32");
    assert!(half < 0.25, "{half}");
}
