//! The fusion hazard behind the layout `sakiko_weights::load_module` gives linear weights: with
//! `fusion` on, Burn 0.21 computes `x·Wᵀ + b` wrongly when `x` has one row and `Wᵀ` is a
//! transposed view (matmul with a fused bias epilogue). Loaded linear layers store `W` row-major,
//! which is right on every backend; the raw view is checked too, as the negative control that
//! shows the guard is needed (on wgpu).

use burn::nn::{Linear, LinearConfig};
use burn::tensor::{FloatDType, backend::Backend};
use safetensors::tensor::TensorView;
use sakiko_weights::{ParamSource, WeightFile, load_module};

mod common;
use common::tensor;

/// A linear layer loaded as the models load theirs: `[out, in]` and `[out]` written to a
/// safetensors file, read by `load_module` into a `LinearConfig::init` layer.
fn loaded<B: Backend>(
    weight: Vec<f32>,
    bias: Vec<f32>,
    [d_out, d_in]: [usize; 2],
    dev: &B::Device,
) -> Linear<B> {
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (w, b) = (bytes(&weight), bytes(&bias));
    let views = [
        (
            "weight",
            TensorView::new(safetensors::Dtype::F32, vec![d_out, d_in], &w).expect("view"),
        ),
        (
            "bias",
            TensorView::new(safetensors::Dtype::F32, vec![d_out], &b).expect("view"),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("linear.safetensors");
    safetensors::serialize_to_file(views, None, &path).expect("write");
    let file = WeightFile::open(&path).expect("open");
    let layer = LinearConfig::new(d_in, d_out).init(dev);
    load_module(layer, &file.scope(""), |path, shape| {
        Ok(if shape.len() == 2 {
            ParamSource::linear_weight(path, FloatDType::F32)
        } else {
            ParamSource::tensor(path, FloatDType::F32)
        })
    })
    .expect("load")
}

/// The timestep MLP's pattern: rows of 256 features through three biased linears, as NextDiT's
/// `t_embedder` and adaLN run them; `guarded` loads the layers as the models do.
fn mlp<B: Backend>(rows: usize, guarded: bool, dev: &B::Device) -> Vec<f32> {
    let layer = |d_in: usize, d_out: usize, seed: u32| -> Linear<B> {
        let weight = tensor::<B, 2>([d_out, d_in], seed, dev);
        let bias = tensor::<B, 1>([d_out], seed + 1, dev);
        if guarded {
            let values =
                |t: burn::tensor::Tensor<B, 2>| t.into_data().to_vec::<f32>().expect("f32");
            let bias = bias.into_data().to_vec::<f32>().expect("f32");
            loaded(values(weight), bias, [d_out, d_in], dev)
        } else {
            Linear {
                weight: burn::module::Param::from_tensor(weight.transpose()),
                bias: Some(burn::module::Param::from_tensor(bias)),
            }
        }
    };
    let x = tensor::<B, 2>([rows, 256], 1, dev);
    let h = burn::tensor::activation::silu(layer(256, 24, 10).forward(x));
    let h = burn::tensor::activation::silu(layer(24, 24, 20).forward(h));
    layer(24, 96, 30)
        .forward(h)
        .into_data()
        .to_vec()
        .expect("f32")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max |Δ| against Flex for one and two rows, guarded or not.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn diffs<B: Backend>(guarded: bool, dev: &B::Device) -> [f32; 2] {
    let flex = Default::default();
    [1, 2].map(|rows| {
        max_diff(
            &mlp::<B>(rows, guarded, dev),
            &mlp::<burn::backend::Flex>(rows, guarded, &flex),
        )
    })
}

#[test]
fn guarded_linear_is_exact_on_flex() {
    let dev = Default::default();
    // Flex against itself with the other layout: only the GEMM's summation order may differ
    // (outputs reach ≈±600; f32 rounding stays below 1e-3).
    for rows in [1, 2] {
        let d = max_diff(
            &mlp::<burn::backend::Flex>(rows, true, &dev),
            &mlp::<burn::backend::Flex>(rows, false, &dev),
        );
        assert!(d < 1e-3, "{rows} rows: {d}");
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn guarded_linear_is_right_with_fusion_on_wgpu() {
    let dev = Default::default();
    // Outputs reach ≈±600; f32 rounding of the GEMMs stays below 1e-3.
    let guarded = diffs::<burn::backend::Wgpu>(true, &dev);
    println!("wgpu fused, row-major weights: max |Δ| {guarded:?}");
    assert!(guarded.iter().all(|&d| d < 1e-3), "{guarded:?}");
    // Negative control: the transposed view is wrong at one row (the bug the guard avoids). If
    // this starts to fail, Burn fixed it.
    let raw = diffs::<burn::backend::Wgpu>(false, &dev);
    println!("wgpu fused, transposed views: max |Δ| {raw:?}");
    assert!(raw[0] > 1.0 && raw[1] < 1e-3, "{raw:?}");
}

/// On CUDA the guarded pattern must be right; whether the raw view is wrong there too is printed
/// (tools/gpu-check records it).
#[cfg(feature = "cuda")]
#[test]
fn guarded_linear_is_right_with_fusion_on_cuda() {
    let dev = Default::default();
    let guarded = diffs::<burn::backend::Cuda>(true, &dev);
    println!("cuda fused, row-major weights: max |Δ| {guarded:?}");
    println!(
        "cuda fused, transposed views: max |Δ| {:?}",
        diffs::<burn::backend::Cuda>(false, &dev)
    );
    assert!(guarded.iter().all(|&d| d < 1e-3), "{guarded:?}");
}
