//! `sakiko_ops::attention` against Burn's own attention called the straightforward way (K/V heads
//! repeated, an explicit `[B, H, S_q, S_kv]` key mask): on Flex, and on wgpu (`--features wgpu`,
//! CI: lavapipe) with fusion and autotune on and off, including strided inputs, batch 2 with
//! ragged key lengths (CFG with captions of different lengths) and query lengths that are not
//! multiples of the flash kernels' stage; and `sakiko_ops::causal_attention` (the text encoders')
//! against a direct computation, on the same backends. On wgpu also the cubek-matmul kernel that
//! shapes both attention and `sakiko_ops::conv2d` at 1×1, launched directly.

use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

mod common;
use common::tensor;

/// The reference: repeated K/V, explicit expanded mask, one call.
fn reference<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    lens: Option<&[usize]>,
) -> Tensor<B, 4> {
    let [b, h, s_q, d] = q.dims();
    let [_, kv, s_kv, _] = k.dims();
    let repeat = |t: Tensor<B, 4>| -> Tensor<B, 4> {
        let t: Tensor<B, 5> = t.unsqueeze_dim(2);
        t.repeat_dim(2, h / kv).reshape([b, h, s_kv, d])
    };
    let mask = lens.map(|lens| {
        let values: Vec<bool> = lens
            .iter()
            .flat_map(|&len| (0..s_kv).map(move |j| j >= len))
            .collect();
        let m: Tensor<B, 4, Bool> =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(values, [b, s_kv]), &q.device())
                .reshape([b, 1, 1, s_kv]);
        m.expand([b, h, s_q, s_kv])
    });
    module::attention(
        q,
        repeat(k),
        repeat(v),
        mask,
        None,
        AttentionModuleOptions::default(),
    )
}

struct Case {
    name: &'static str,
    b: usize,
    h: usize,
    kv: usize,
    s: usize,
    d: usize,
    lens: Option<Vec<usize>>,
}

fn cases() -> Vec<Case> {
    let case = |name, b, h, kv, s, d, lens: Option<Vec<usize>>| Case {
        name,
        b,
        h,
        kv,
        s,
        d,
        lens,
    };
    vec![
        case("MHA, batch 1", 1, 2, 2, 37, 16, None),
        case("GQA 4/2, batch 2", 2, 4, 2, 50, 16, None),
        case(
            "GQA 6/2, ragged CFG batch",
            2,
            6,
            2,
            70,
            24,
            Some(vec![70, 23]),
        ),
        case(
            "MQA 4/1, ragged batch 3",
            3,
            4,
            1,
            45,
            8,
            Some(vec![12, 45, 12]),
        ),
        case(
            "long, above the stage",
            2,
            2,
            1,
            300,
            16,
            Some(vec![300, 257]),
        ),
    ]
}

/// Runs every case on `B`, with q/k/v handed over as `[B, S, H, D]` views swapped to heads-first
/// (what NextDiT passes), and compares against the reference on Flex.
fn check<B: Backend>(device: &B::Device, tolerance: f32) {
    type Ref = burn::backend::Flex;
    let flex = Default::default();
    for c in cases() {
        let lens = c.lens.as_deref();
        let swapped = |shape: [usize; 4], seed, dev: &B::Device| {
            let [b, h, s, d] = shape;
            tensor::<B, 4>([b, s, h, d], seed, dev).swap_dims(1, 2)
        };
        let ours = sakiko_ops::attention(
            swapped([c.b, c.h, c.s, c.d], 1, device),
            swapped([c.b, c.kv, c.s, c.d], 2, device),
            swapped([c.b, c.kv, c.s, c.d], 3, device),
            lens,
        );
        let swapped_ref = |shape: [usize; 4], seed| {
            let [b, h, s, d] = shape;
            tensor::<Ref, 4>([b, s, h, d], seed, &flex).swap_dims(1, 2)
        };
        let expected = reference(
            swapped_ref([c.b, c.h, c.s, c.d], 1),
            swapped_ref([c.b, c.kv, c.s, c.d], 2),
            swapped_ref([c.b, c.kv, c.s, c.d], 3),
            lens,
        );
        assert_eq!(ours.dims(), [c.b, c.h, c.s, c.d], "{}", c.name);
        let ours: Vec<f32> = ours.into_data().to_vec().expect("f32");
        let expected: Vec<f32> = expected.into_data().to_vec().expect("f32");
        let diff = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{}: {} max |Δ| {diff:.2e}", B::name(device), c.name);
        assert!(
            diff <= tolerance,
            "{}: {} max |Δ| {diff:e}",
            B::name(device),
            c.name
        );
    }
}

#[test]
fn flex_matches_burn_attention_with_mask_and_repeats() {
    check::<burn::backend::Flex>(&Default::default(), 1e-5);
}

/// Causal attention (text encoders) on `B` against a direct computation in plain loops: each
/// query row's softmax over the keys it sees (`j ≤ i`, `j < len`, `i − j < window`), padded rows
/// included, with and without softcapping; q/k/v as head-first views of `[B, L, H, D]`.
fn check_causal<B: Backend>(device: &B::Device, tolerance: f32) {
    // (b, h, kv, l, d, lengths, window, softcap)
    type CausalCase = (
        usize,
        usize,
        usize,
        usize,
        usize,
        Vec<usize>,
        Option<usize>,
        Option<f64>,
    );
    let cases: Vec<CausalCase> = vec![
        (2, 4, 2, 37, 16, vec![37, 20], None, None),
        (2, 4, 2, 37, 16, vec![37, 20], Some(8), None),
        // Several blocks of query rows, each with its own span of keys.
        (1, 2, 1, 130, 8, vec![130], Some(50), None),
        (3, 2, 2, 9, 8, vec![9, 1, 5], Some(3), Some(2.0)),
    ];
    for (b, h, kv, l, d, lens, window, softcap) in cases {
        let scale = 0.3;
        let heads_first =
            |heads, seed| tensor::<B, 4>([b, l, heads, d], seed, device).swap_dims(1, 2);
        // The mask's second use (its dense form kept from the first) is the one checked.
        let mask = sakiko_ops::CausalMask::new(&lens, window);
        let run = || {
            sakiko_ops::causal_attention(
                heads_first(h, 4),
                heads_first(kv, 5),
                heads_first(kv, 6),
                &mask,
                scale,
                softcap,
            )
        };
        run();
        let ours = run();
        assert_eq!(ours.dims(), [b, h, l, d]);
        let ours: Vec<f32> = ours.into_data().convert::<f32>().to_vec().expect("f32");
        let values = |heads, seed| -> Vec<f32> {
            let t = tensor::<burn::backend::Flex, 4>([b, l, heads, d], seed, &Default::default());
            t.into_data().to_vec().expect("f32")
        };
        let (q, k, v) = (values(h, 4), values(kv, 5), values(kv, 6));
        // Element [bi, t, head, e] of a `[B, L, heads, D]` buffer.
        let at = |x: &[f32], heads, bi, t, head, e| x[((bi * l + t) * heads + head) * d + e];
        let mut diff = 0f32;
        for bi in 0..b {
            for hi in 0..h {
                let kh = hi / (h / kv);
                for i in 0..l {
                    let seen: Vec<usize> = (0..l)
                        .filter(|&j| j <= i && j < lens[bi] && window.is_none_or(|w| i - j < w))
                        .collect();
                    let scores: Vec<f64> = seen
                        .iter()
                        .map(|&j| {
                            let dot: f64 = (0..d)
                                .map(|e| {
                                    (at(&q, h, bi, i, hi, e) * at(&k, kv, bi, j, kh, e)) as f64
                                })
                                .sum();
                            let s = dot * scale;
                            softcap.map_or(s, |c| c * (s / c).tanh())
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for e in 0..d {
                        let want: f64 = seen
                            .iter()
                            .zip(&weights)
                            .map(|(&j, w)| w * at(&v, kv, bi, j, kh, e) as f64)
                            .sum::<f64>()
                            / total;
                        let got = ours[((bi * h + hi) * l + i) * d + e];
                        diff = diff.max((got - want as f32).abs());
                    }
                }
            }
        }
        println!(
            "{}: causal b {b}, l {l}, window {window:?}, softcap {softcap:?}: max |Δ| {diff:.2e}",
            B::name(device)
        );
        assert!(
            diff <= tolerance,
            "{}: causal l {l} window {window:?} softcap {softcap:?}: max |Δ| {diff:e}",
            B::name(device)
        );
    }
}

#[test]
fn flex_causal_attention_matches_a_direct_computation() {
    check_causal::<burn::backend::Flex>(&Default::default(), 1e-5);
}

#[test]
fn padding_keys_beyond_the_length_are_ignored() {
    type B = burn::backend::Flex;
    let device = Default::default();
    let q = tensor::<B, 4>([1, 2, 9, 8], 7, &device);
    let k = tensor::<B, 4>([1, 1, 9, 8], 8, &device);
    let v = tensor::<B, 4>([1, 1, 9, 8], 9, &device);
    let short = sakiko_ops::attention(
        q.clone(),
        k.clone().narrow(2, 0, 5),
        v.clone().narrow(2, 0, 5),
        None,
    );
    // Garbage in the padded keys and values must not change anything.
    let garbage = |t: Tensor<B, 4>| {
        Tensor::cat(
            vec![t.narrow(2, 0, 5), Tensor::full([1, 1, 4, 8], 1e3, &device)],
            2,
        )
    };
    let padded = sakiko_ops::attention(q, garbage(k), garbage(v), Some(&[5]));
    short
        .into_data()
        .assert_approx_eq::<f32>(&padded.into_data(), Default::default());
}

/// Half-precision inputs come back in their dtype, computed as the f32 attention of the rounded
/// inputs (the Flex kernel computes in f32, as Flex's own attention does).
#[test]
fn half_precision_inputs_keep_their_dtype() {
    use burn::tensor::{DType, FloatDType};
    type B = burn::backend::Flex;
    let device = Default::default();
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let half = |shape, seed| tensor::<B, 4>(shape, seed, &device).cast(dtype);
        let (q, k, v) = (
            half([2, 4, 70, 16], 1),
            half([2, 2, 70, 16], 2),
            half([2, 2, 70, 16], 3),
        );
        let f32 = |t: &Tensor<B, 4>| t.clone().cast(FloatDType::F32);
        let expected = reference(f32(&q), f32(&k), f32(&v), Some(&[70, 33]));
        let ours = sakiko_ops::attention(q, k, v, Some(&[70, 33]));
        assert_eq!(ours.dtype(), DType::from(dtype));
        let diff: f32 = (ours.cast(FloatDType::F32) - expected)
            .abs()
            .max()
            .into_scalar();
        // One rounding of outputs of magnitude < 4 to the half type.
        let bound = if dtype == FloatDType::BF16 {
            2e-2
        } else {
            2e-3
        };
        assert!(diff <= bound, "{dtype:?}: max |Δ| {diff:e}");
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
    use burn::tensor::{DType, Tensor};
    use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
    use cubek::matmul::launch::{Strategy, launch_ref};
    use cubek::matmul::routines::double_unit::DoubleUnitSelectionArgs;
    use cubek::matmul::routines::simple_unit::SimpleUnitSelectionArgs;
    use cubek::matmul::routines::{BlueprintStrategy, TileSizeSelection};
    use cubek::std::InputBinding;

    use super::common::{self, tensor};

    /// Fusion and autotune on: the backend users get.
    #[test]
    fn wgpu_fused_autotuned() {
        super::check::<burn::backend::Wgpu>(&WgpuDevice::default(), 1e-5);
        super::check_causal::<burn::backend::Wgpu>(&WgpuDevice::default(), 1e-5);
    }

    type Unfused = CubeBackend<WgpuRuntime, f32, i32, u32>;

    /// The same kernels without the fusion layer (fused and unfused must agree).
    #[test]
    fn wgpu_unfused() {
        super::check::<Unfused>(&WgpuDevice::default(), 1e-5);
        super::check_causal::<Unfused>(&WgpuDevice::default(), 1e-5);
    }

    /// cubek-matmul's double-buffered unit kernel at `tile_size`.
    fn double(tile_size: TileSizeSelection) -> Strategy {
        Strategy::DoubleUnit(BlueprintStrategy::Inferred(DoubleUnitSelectionArgs {
            tile_size,
        }))
    }

    /// cubek-matmul's simple unit kernel at `tile_size`.
    fn simple(tile_size: TileSizeSelection) -> Strategy {
        Strategy::SimpleUnit(BlueprintStrategy::Inferred(SimpleUnitSelectionArgs {
            tile_size,
        }))
    }

    /// The largest `|got[i] − want(i)|`.
    fn max_error(got: &[f32], want: impl Fn(usize) -> f32) -> f32 {
        got.iter()
            .enumerate()
            .map(|(i, g)| (g - want(i)).abs())
            .fold(0f32, f32::max)
    }

    /// `out = lhs · rhs` by one cubek-matmul kernel, chosen here rather than by autotune.
    fn launch(strategy: &Strategy, lhs: Tensor<Unfused, 4>, rhs: Tensor<Unfused, 4>) -> Vec<f32> {
        let [b, h, m, _] = lhs.dims();
        let n = rhs.dims()[3];
        let out = Tensor::<Unfused, 4>::zeros([b, h, m, n], &WgpuDevice::default());
        let f32 = || DType::F32.into();
        let (l, r, o) = (
            lhs.into_primitive().tensor(),
            rhs.into_primitive().tensor(),
            out.clone().into_primitive().tensor(),
        );
        let client = o.client.clone();
        let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
            lhs: f32(),
            rhs: f32(),
            out: f32(),
        });
        launch_ref(
            strategy,
            &client,
            InputBinding::new(l.binding(), f32()),
            InputBinding::new(r.binding(), f32()),
            o.binding(),
            &mut dtypes,
        )
        .expect("the kernel accepts the problem");
        out.into_data().to_vec().expect("f32")
    }

    /// Why `HEAD_DIM_BLOCK` exists. cubek-matmul 0.2's double-buffered unit matmul, one of the
    /// candidates autotune times for the score product `q·kᵀ` of Burn's attention fallback, is
    /// wrong when `kᵀ` is a transposed view and the head dim is 8 modulo 16; with the head dim
    /// zero-padded as `sakiko_ops` pads it, every unit candidate is right. (When the unpadded
    /// assertion fails, upstream has fixed the kernel and the padding can go.)
    #[test]
    fn double_buffered_unit_matmul_needs_padded_head_dims() {
        let device = WgpuDevice::default();
        let (m, n) = (128, 13);
        for d in [8usize, 24, 40] {
            let width = d.next_multiple_of(sakiko_ops::HEAD_DIM_BLOCK);
            let q = tensor::<Unfused, 4>([1, 1, m, d], 1, &device);
            let k = tensor::<Unfused, 4>([1, 1, n, d], 2, &device);
            let (qs, ks) = (common::values(m * d, 1), common::values(n * d, 2));
            let expected: Vec<f32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..d).map(|x| qs[r * d + x] * ks[c * d + x]).sum()
                })
                .collect();
            let pad = |t: Tensor<Unfused, 4>| {
                let [b, h, s, _] = t.dims();
                Tensor::cat(vec![t, Tensor::zeros([b, h, s, width - d], &device)], 3)
            };
            let error = |got: Vec<f32>| max_error(&got, |i| expected[i]);
            for tile in [
                TileSizeSelection::MaxTileSize,
                TileSizeSelection::MinTileSize,
            ] {
                let unpadded = error(launch(&double(tile), q.clone(), k.clone().swap_dims(2, 3)));
                assert!(
                    unpadded > 1.0,
                    "d {d}: the kernel is right now ({unpadded:e})"
                );
                for strategy in [double(tile), simple(tile)] {
                    let padded = error(launch(
                        &strategy,
                        pad(q.clone()),
                        pad(k.clone()).swap_dims(2, 3),
                    ));
                    assert!(padded < 1e-4, "d {d}, {strategy}: max |Δ| {padded:e}");
                }
            }
        }
    }

    /// Why `sakiko_ops::conv2d` multiplies 1×1 kernels itself. CubeCL's 1×1 convolution is
    /// `x·Wᵀ` with `Wᵀ` a transposed view, reduced over `C_in`, the case above that is wrong at 8
    /// modulo 16 (the tiny VAE's `conv_shortcut` has `C_in` 8; CI's `sakiko generate` img2img
    /// on wgpu failed by 1.4e-2 when autotune chose it). `W·x`, both operands row-major, is right
    /// with the same kernel at the same reduced dims. (When the `x·Wᵀ` assertion fails, upstream
    /// has fixed the kernel and `sakiko_ops::conv2d` may hand 1×1 kernels back to Burn.)
    #[test]
    fn double_buffered_unit_matmul_is_right_on_row_major_operands() {
        let device = WgpuDevice::default();
        let (c_out, pixels) = (16, 128);
        for c_in in [8usize, 24, 40] {
            let w = tensor::<Unfused, 4>([1, 1, c_out, c_in], 3, &device);
            let x = tensor::<Unfused, 4>([1, 1, c_in, pixels], 4, &device);
            let (ws, xs) = (
                common::values(c_out * c_in, 3),
                common::values(c_in * pixels, 4),
            );
            for tile in [
                TileSizeSelection::MaxTileSize,
                TileSizeSelection::MinTileSize,
            ] {
                let strategy = double(tile);
                let want = |o: usize, p: usize| -> f32 {
                    (0..c_in)
                        .map(|c| ws[o * c_in + c] * xs[c * pixels + p])
                        .sum()
                };
                // W·x, as `sakiko_ops::conv2d` multiplies: `[C_out, pixels]`.
                let got = launch(&strategy, w.clone(), x.clone());
                let error = max_error(&got, |i| want(i / pixels, i % pixels));
                assert!(error < 1e-4, "C_in {c_in}, {strategy}: max |Δ| {error:e}");
                // x·Wᵀ with Wᵀ a view, as CubeCL's 1×1 convolution multiplies (`[pixels, C_out]`):
                // wrong with this kernel, right with the simple one (the negative control).
                let xt = Tensor::from_data(x.clone().swap_dims(2, 3).into_data(), &device);
                let transposed = |strategy: &Strategy| {
                    let got = launch(strategy, xt.clone(), w.clone().swap_dims(2, 3));
                    max_error(&got, |i| want(i % c_out, i / c_out))
                };
                let wrong = transposed(&strategy);
                assert!(
                    wrong > 1.0,
                    "C_in {c_in}: the kernel is right now ({wrong:e})"
                );
                let simple = simple(tile);
                let right = transposed(&simple);
                assert!(right < 1e-4, "C_in {c_in}, {simple}: max |Δ| {right:e}");
            }
        }
    }

    /// `sakiko_ops::conv2d` at 1×1 (`C_in` 8 modulo 16 among them), fused and autotuned,
    /// against Burn's convolution on Flex.
    #[test]
    fn pointwise_conv2d_matches_flex() {
        use burn::backend::Flex;
        use burn::nn::conv::{Conv2d, Conv2dConfig};

        fn conv<B: burn::tensor::backend::Backend>(
            c_in: usize,
            c_out: usize,
            device: &B::Device,
        ) -> Conv2d<B> {
            let mut conv = Conv2dConfig::new([c_in, c_out], [1, 1]).init::<B>(device);
            conv.weight = burn::module::Param::from_tensor(tensor([c_out, c_in, 1, 1], 5, device));
            conv.bias = Some(burn::module::Param::from_tensor(tensor([c_out], 6, device)));
            conv
        }
        let device = WgpuDevice::default();
        for (c_in, c_out) in [(8, 16), (24, 8), (16, 8)] {
            let x = tensor::<burn::backend::Wgpu, 4>([2, c_in, 6, 5], 7, &device);
            let got = sakiko_ops::conv2d(&conv(c_in, c_out, &device), x);
            let x = tensor::<Flex, 4>([2, c_in, 6, 5], 7, &Default::default());
            let want = conv::<Flex>(c_in, c_out, &Default::default()).forward(x);
            let got = Tensor::<Flex, 4>::from_data(got.into_data(), &Default::default());
            let error = (got - want).abs().max().into_scalar();
            assert!(error < 1e-4, "C_in {c_in}: max |Δ| {error:e}");
        }
    }
}

/// Fusion and autotune on CUDA: flash attention (blackbox on tensor cores, unit) is a candidate.
/// (burn-cuda 0.21 does not export its unfused backend type; the fused/unfused comparison runs
/// on wgpu, whose CubeCL kernels are the same.)
#[cfg(feature = "cuda")]
#[test]
fn cuda_fused_autotuned() {
    check::<burn::backend::Cuda>(&Default::default(), 1e-4);
    check_causal::<burn::backend::Cuda>(&Default::default(), 1e-4);
}
