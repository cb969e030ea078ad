//! The VAE's GroupNorm + SiLU and nearest ×2 upsampling, each one threaded pass over NCHW f32.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use burn::nn::GroupNorm;
use burn::tensor::{Tensor, backend::Backend};
use multiversion::multiversion;
use rayon::prelude::*;

use super::math::exp;
use super::{contiguous, filled_by, from_flex, into_flex, slice, tensor_of};

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
    let per_group = c / norm.num_groups;
    let group_len = per_group * h * w;
    // Group `task`'s statistics from its values, then each of its channels' affine map.
    let coefficients = |task: usize, x: &[f32]| {
        let (mean, var) = moments(x);
        let rstd = 1.0 / (var + norm.epsilon).sqrt();
        let first = (task % norm.num_groups) * per_group;
        move |ch: usize| {
            let g = gamma[first + ch] as f64;
            (
                (g * rstd) as f32,
                (beta[first + ch] as f64 - mean * g * rstd) as f32,
            )
        }
    };
    let mut x = contiguous(into_flex(x));
    // A tensor nobody else holds (the output of the layer before) is normalised in place, if its
    // values start its storage (groups are counted from there).
    let len = x.layout().num_elements();
    let at_start = x.layout().contiguous_offsets() == Some((0, len));
    if let Some(xs) = x.try_storage_mut::<f32>().filter(|_| at_start) {
        xs[..len]
            .par_chunks_mut(group_len.max(1))
            .enumerate()
            .for_each(|(task, group)| {
                let ab = coefficients(task, group);
                for (ch, o) in group.chunks_exact_mut(h * w).enumerate() {
                    let (a, b) = ab(ch);
                    affine_in_place(o, a, b, then_silu);
                }
            });
        return from_flex(x);
    }
    let xs = slice(&x);
    // SAFETY: the groups tile the output, and `affine` writes every value of each.
    let out = unsafe {
        filled_by(xs.len(), |out| {
            out.par_chunks_mut(group_len.max(1))
                .zip(xs.par_chunks(group_len.max(1)))
                .enumerate()
                .for_each(|(task, (o, x))| {
                    let ab = coefficients(task, x);
                    for (ch, (o, x)) in o
                        .chunks_exact_mut(h * w)
                        .zip(x.chunks_exact(h * w))
                        .enumerate()
                    {
                        let (a, b) = ab(ch);
                        affine(o, x, a, b, then_silu);
                    }
                });
        })
    };
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

/// `x·a + b`, then SiLU if `then_silu`.
#[inline(always)]
fn map(x: f32, a: f32, b: f32, then_silu: bool) -> f32 {
    let y = x * a + b;
    if then_silu { y / (1.0 + exp(-y)) } else { y }
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn affine(out: &mut [MaybeUninit<f32>], x: &[f32], a: f32, b: f32, then_silu: bool) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(map(x, a, b, then_silu));
    }
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn affine_in_place(xs: &mut [f32], a: f32, b: f32, then_silu: bool) {
    for x in xs {
        *x = map(*x, a, b, then_silu);
    }
}

/// Each pixel of `x` `[B, C, H, W]` repeated into a 2×2 block.
pub(crate) fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let x = contiguous(into_flex(x));
    let xs = slice(&x);
    // SAFETY: each input row writes its two output rows of 2W whole, and the rows tile the output.
    let out = unsafe {
        filled_by(xs.len() * 4, |out| {
            out.par_chunks_mut(4 * w.max(1))
                .zip(xs.par_chunks(w.max(1)))
                .for_each(|(o, x)| {
                    let (top, bottom) = o.split_at_mut(2 * w);
                    for ((t, b), &v) in top
                        .chunks_exact_mut(2)
                        .zip(bottom.chunks_exact_mut(2))
                        .zip(x)
                    {
                        t.fill(MaybeUninit::new(v));
                        b.fill(MaybeUninit::new(v));
                    }
                });
        })
    };
    from_flex(tensor_of(out, &[b, c, 2 * h, 2 * w]))
}
