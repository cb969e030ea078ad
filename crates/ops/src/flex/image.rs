//! The VAE's GroupNorm + SiLU and nearest ×2 upsampling as single threaded passes over NCHW f32.

use burn::nn::GroupNorm;
use burn::tensor::{Tensor, backend::Backend};
use multiversion::multiversion;
use rayon::prelude::*;

use super::math::exp;
use super::{contiguous, from_flex, into_flex, slice, tensor_of};

/// GroupNorm of `x` `[B, C, H, W]` with `norm`'s affine parameters, then SiLU if `then_silu`.
/// Statistics are accumulated in f64 (a group spans up to millions of values).
pub(crate) fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    then_silu: bool,
) -> Tensor<B, 4> {
    let shape = x.dims();
    let [_, c, h, w] = shape;
    let param = |p: &Option<burn::module::Param<Tensor<B, 1>>>| {
        p.as_ref().map(|p| contiguous(into_flex(p.val())))
    };
    let (Some(gamma), Some(beta)) = (param(&norm.gamma), param(&norm.beta)) else {
        unreachable!("called for affine norms")
    };
    let (gamma, beta) = (slice(&gamma), slice(&beta));
    let x = contiguous(into_flex(x));
    let xs = slice(&x);
    let per_group = c / norm.num_groups;
    let group_len = per_group * h * w;
    let eps = norm.epsilon;
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(group_len)
        .zip(xs.par_chunks(group_len))
        .enumerate()
        .for_each(|(task, (o, x))| {
            let (mean, var) = moments(x);
            let rstd = 1.0 / (var + eps).sqrt();
            let first = (task % norm.num_groups) * per_group;
            for (ch, (o, x)) in o
                .chunks_exact_mut(h * w)
                .zip(x.chunks_exact(h * w))
                .enumerate()
            {
                let a = (gamma[first + ch] as f64 * rstd) as f32;
                let b = (beta[first + ch] as f64 - mean * gamma[first + ch] as f64 * rstd) as f32;
                affine(o, x, a, b, then_silu);
            }
        });
    from_flex(tensor_of(out, &shape))
}

/// Mean and (biased) variance, in two passes as PyTorch computes them.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn moments(x: &[f32]) -> (f64, f64) {
    const LANES: usize = 8;
    let n = x.len() as f64;
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i] as f64;
        }
    }
    let rest: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    let mean = (acc.iter().sum::<f64>() + rest) / n;
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let d = c[i] as f64 - mean;
            acc[i] += d * d;
        }
    }
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum();
    (mean, (acc.iter().sum::<f64>() + rest) / n)
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn affine(out: &mut [f32], x: &[f32], a: f32, b: f32, then_silu: bool) {
    if then_silu {
        for (o, &x) in out.iter_mut().zip(x) {
            let y = x * a + b;
            *o = y / (1.0 + exp(-y));
        }
    } else {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = x * a + b;
        }
    }
}

/// Each pixel of `x` `[B, C, H, W]` repeated into a 2×2 block.
pub(crate) fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let x = contiguous(into_flex(x));
    let xs = slice(&x);
    let mut out = vec![0f32; xs.len() * 4];
    // One task per input row: two identical output rows of 2W.
    out.par_chunks_mut(4 * w)
        .zip(xs.par_chunks(w))
        .for_each(|(o, x)| {
            let (top, bottom) = o.split_at_mut(2 * w);
            for (pair, &v) in top.chunks_exact_mut(2).zip(x) {
                pair.fill(v);
            }
            bottom.copy_from_slice(top);
        });
    from_flex(tensor_of(out, &[b, c, 2 * h, 2 * w]))
}
