//! Each Flex kernel against the generic Burn code it replaces, on the same random f32 inputs,
//! including strided views (what the models pass) and sizes that leave partial chunks.

use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::{Distribution, Tensor};

use burn_flex::Layout;

use super::{from_flex, into_flex};
use crate::group_norm::{group_norm_generic, upsample_nearest2x_generic};
use crate::norm::rms_norm_generic;
use crate::rope::{apply_rope_generic, rope_pairs_generic};
use crate::{
    RmsNorm, apply_rope, conv2d, geglu, geglu_generic, group_norm, linear, rope_pairs, swiglu,
    swiglu_generic, upsample_nearest2x,
};

fn random<const D: usize>(shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 2.0), &Default::default())
}

/// The largest difference relative to the reference's largest magnitude (at least 1): the inputs
/// are unseeded, so bounds must hold for any draw.
fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let scale: f32 = b.clone().abs().max().into_scalar();
    let diff: f32 = (a - b).abs().max().into_scalar();
    diff / scale.max(1.0)
}

/// Split by columns (2 threads), by rows and columns (5), serial (tiny), one token, with and
/// without bias, weights as transposed views and inputs as strided views.
#[test]
fn linear_matches_burn_linear() {
    use burn::nn::LinearConfig;
    let device = Default::default();
    let cases = [
        // (input dims, d_out, bias, weight as a transposed view, input as a strided view, threads)
        ([2, 70, 48], 130, true, false, false, 2),
        ([2, 70, 48], 130, true, false, true, 5),
        ([1, 1, 5], 3, false, false, false, 2),
        ([3, 57, 129], 200, false, true, true, 3),
        ([1, 1, 768], 1000, true, false, false, 2),
    ];
    for (dims, d_out, bias, transposed, strided, threads) in cases {
        let mut layer = LinearConfig::new(dims[2], d_out)
            .with_bias(bias)
            .init::<Flex>(&device);
        if transposed {
            let w: Tensor<Flex, 2> = random([d_out, dims[2]]);
            layer.weight = Param::from_tensor(w.transpose());
        }
        let x = if strided {
            random([dims[1], dims[0], dims[2]]).swap_dims(0, 1)
        } else {
            random(dims)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let got = pool.install(|| linear(&layer, x.clone()));
        let diff = max_diff(got, layer.forward(x));
        assert!(diff < 1e-5, "{dims:?} → {d_out}: {diff}");
    }
}

/// 3×3 with padding (the VAE's), split into single and several rows per task, 1×1 read
/// directly, no padding, asymmetric padding with a non-square kernel, with and without bias.
#[test]
fn conv2d_matches_burn_conv2d() {
    use burn::nn::PaddingConfig2d::{Explicit, Valid};
    use burn::nn::conv::Conv2dConfig;
    let device = Default::default();
    let cases = [
        // (input dims, c_out, kernel, padding, bias, threads)
        ([2, 5, 9, 7], 6, [3, 3], Explicit(1, 1, 1, 1), true, 2),
        ([2, 5, 9, 7], 6, [3, 3], Explicit(1, 1, 1, 1), true, 5),
        ([1, 32, 40, 33], 16, [3, 3], Explicit(1, 1, 1, 1), false, 2),
        // Uneven tasks on one thread: 7 rows, then 3.
        ([1, 64, 10, 64], 4, [3, 3], Explicit(1, 1, 1, 1), false, 1),
        ([1, 8, 4, 6], 3, [1, 1], Valid, false, 2),
        ([3, 3, 5, 5], 4, [3, 3], Valid, true, 3),
        ([1, 4, 6, 7], 5, [2, 3], Explicit(0, 1, 2, 0), true, 2),
    ];
    for (dims, c_out, kernel, padding, bias, threads) in cases {
        let mut conv = Conv2dConfig::new([dims[1], c_out], kernel)
            .with_padding(padding)
            .with_bias(bias)
            .init::<Flex>(&device);
        conv.weight = Param::from_tensor(random([c_out, dims[1], kernel[0], kernel[1]]));
        let x = random(dims);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let got = pool.install(|| conv2d(&conv, x.clone()));
        let diff = max_diff(got, conv.forward(x));
        assert!(diff < 1e-5, "{dims:?} → {c_out}, {kernel:?}: {diff}");
    }
}

#[test]
fn swiglu_matches_silu_times_up() {
    for shape in [[2, 70, 48], [1, 1, 5], [3, 257, 129]] {
        let (g, u) = (random(shape), random(shape));
        // Large gates of both signs reach exp's clamped range.
        let g = g * 12.0;
        let diff = max_diff(swiglu(g.clone(), u.clone()), swiglu_generic(g, u));
        assert!(diff < 2e-6, "{shape:?}: {diff}");
    }
}

#[test]
fn geglu_matches_gelu_tanh_times_up() {
    for shape in [[2, 70, 48], [1, 1, 5], [3, 257, 129]] {
        let (g, u) = (random(shape) * 4.0, random(shape));
        let diff = max_diff(geglu(g.clone(), u.clone()), geglu_generic(g, u));
        assert!(diff < 2e-6, "{shape:?}: {diff}");
    }
}

#[test]
fn rope_pairs_matches_the_generic_rotation() {
    for (b, s, h, hd) in [(2, 37, 3, 16), (1, 300, 4, 8), (3, 5, 1, 2)] {
        // x as NextDiT hands it over: heads of a wider projection, a strided view.
        let x = random([b, s, h + 1, hd]).narrow(2, 1, h);
        let (cos, sin) = (random([b, s, 1, hd / 2]), random([b, s, 1, hd / 2]));
        let diff = max_diff(
            rope_pairs(x.clone(), &cos, &sin),
            rope_pairs_generic(x, &cos, &sin),
        );
        assert!(diff < 2e-6, "{:?}: {diff}", [b, s, h, hd]);
    }
}

#[test]
fn rope_half_matches_the_generic_rotation() {
    for (b, h, l, hd) in [(2, 3, 37, 16), (1, 4, 300, 96), (3, 1, 5, 2)] {
        // x as Gemma and Qwen3 hand it over: head-first views of `[B, L, H, hd]`, and a
        // contiguous tensor.
        let view = random([b, l, h, hd]).swap_dims(1, 2);
        let (cos, sin) = (random([1, 1, l, hd]), random([1, 1, l, hd]));
        for x in [view.clone(), view.clone().reshape([b, h, l, hd]) * 1.0] {
            let diff = max_diff(
                apply_rope(x.clone(), &cos, &sin),
                apply_rope_generic(x, &cos, &sin),
            );
            assert!(diff < 2e-6, "{:?}: {diff}", [b, h, l, hd]);
        }
    }
}

#[test]
fn rms_norm_matches_the_generic_norm() {
    let device = Default::default();
    for (b, s, d) in [(2, 70, 48), (1, 3, 7), (3, 600, 96)] {
        let mut norm = RmsNorm::<Flex>::init(d, 1e-5, &device);
        norm.weight = Param::from_tensor(random([d]));
        let x = random([b, s, d + 2]).narrow(2, 1, d);
        let generic = |x| rms_norm_generic(x, norm.weight.val(), 1e-5);
        let diff = max_diff(norm.forward(x.clone()), generic(x.clone()));
        assert!(diff < 2e-6, "{:?}: {diff}", [b, s, d]);
        let scale = random([b, 1, d]);
        let diff = max_diff(
            norm.forward_scaled(x.clone(), scale.clone()),
            generic(x.clone()) * scale.clone(),
        );
        assert!(diff < 2e-6, "{:?} scaled: {diff}", [b, s, d]);
        let residual = random([b, s, d]);
        for gate in [Some(scale), None] {
            let want = match gate.clone() {
                Some(g) => residual.clone() + g * generic(x.clone()),
                None => residual.clone() + generic(x.clone()),
            };
            let got = norm.forward_residual(residual.clone(), x.clone(), gate);
            let diff = max_diff(got, want);
            assert!(diff < 2e-6, "{:?} residual: {diff}", [b, s, d]);
        }
        // 4-D, as the per-head q/k norms.
        let x4 = random([b, s, 3, d]);
        let diff = max_diff(
            norm.forward(x4.clone()),
            rms_norm_generic(x4, norm.weight.val(), 1e-5),
        );
        assert!(diff < 2e-6, "{:?} 4-D: {diff}", [b, s, d]);
    }
}

#[test]
fn group_norm_matches_burn_group_norm() {
    use burn::nn::GroupNormConfig;
    let device = Default::default();
    for (b, c, h, w, groups) in [(1, 8, 5, 7, 4), (2, 64, 16, 16, 32), (1, 6, 2, 2, 3)] {
        let mut norm = GroupNormConfig::new(groups, c)
            .with_epsilon(1e-6)
            .init::<Flex>(&device);
        norm.gamma = Some(Param::from_tensor(random([c])));
        norm.beta = Some(Param::from_tensor(random([c])));
        // Offset values, as the VAE's activations have, test the two-pass variance. (Burn's f32
        // statistics, the reference, lose digits on offset values: hence 1e-5.)
        let x = random([b, c, h, w]).add_scalar(5.0);
        let before = x.to_data();
        for then_silu in [false, true] {
            let expected = group_norm_generic(&norm, x.clone(), then_silu);
            // A shared input (the kernel writes a new tensor, and `x` stays as it was), an input
            // nobody else holds (normalised in place), and a view alone on its storage but 3
            // values into it (a new tensor: in place, the groups would be cut at the wrong
            // places).
            let unique = Tensor::<Flex, 4>::from_data(before.clone(), &device);
            let flat = into_flex(Tensor::cat(vec![random([3]), x.clone().reshape([-1])], 0));
            let layout = Layout::contiguous([b, c, h, w].into());
            let strides = layout.strides().to_vec();
            let layout = Layout::new(layout.shape().clone(), strides, 3);
            let offset = from_flex(flat.with_layout(layout));
            for (input, name) in [
                (x.clone(), "shared"),
                (unique, "unique"),
                (offset, "offset"),
            ] {
                let diff = max_diff(group_norm(&norm, input, then_silu), expected.clone());
                assert!(
                    diff < 1e-5,
                    "{:?} {name}, silu {then_silu}: {diff}",
                    [b, c, h, w]
                );
            }
            assert_eq!(x.to_data(), before, "the shared input was written");
        }
    }
}

#[test]
fn upsampling_matches_the_generic_repeat() {
    for shape in [[1, 1, 2, 3], [2, 3, 17, 9]] {
        let x = random(shape);
        assert_eq!(
            upsample_nearest2x(x.clone()).into_data(),
            upsample_nearest2x_generic(x).into_data()
        );
    }
}
