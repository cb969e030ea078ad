//! Element- and row-wise f32 kernels: each a single threaded pass, written as lane-wise loops over
//! fixed-size chunks so that `multiversion` compiles them to AVX-512 or AVX2 code where the CPU
//! has it (Flex computes `exp` and `tanh` one scalar libm call at a time).

use burn::tensor::{Tensor, backend::Backend};
use multiversion::multiversion;
use rayon::prelude::*;

use super::{contiguous, from_flex, into_flex, row_readable, slice, tensor_of};

/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// Lanes of the accumulators: independent values the compiler keeps in vector registers.
const LANES: usize = 16;

/// `silu(gate) · up`, element-wise (shapes equal).
pub(crate) fn swiglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    gated(gate, up, swiglu_chunk)
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn swiglu_chunk(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// `gelu_tanh(gate) · up`, element-wise (shapes equal).
pub(crate) fn geglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    gated(gate, up, geglu_chunk)
}

/// `chunk(out, gate, up)` over equal-shaped `gate` and `up`, in parallel pieces.
fn gated<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
    chunk: fn(&mut [f32], &[f32], &[f32]),
) -> Tensor<B, D> {
    let shape = gate.dims();
    let (gate, up) = (contiguous(into_flex(gate)), contiguous(into_flex(up)));
    let (g, u) = (slice(&gate), slice(&up));
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| chunk(o, g, u));
    from_flex(tensor_of(out, &shape))
}

/// `0.5·x·(1 + tanh(u))` computed as `x · sigmoid(2u)`, the same value without the cancellation
/// of `1 + tanh` for negative `u`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn geglu_chunk(out: &mut [f32], gate: &[f32], up: &[f32]) {
    let k = (2.0 / std::f32::consts::PI).sqrt();
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let inner = k * (g + 0.044715 * g * g * g);
        *o = g / (1.0 + exp(-2.0 * inner)) * u;
    }
}

/// NextDiT's RoPE: adjacent pairs `(x[2k], x[2k+1])` of `x` `[B, S, H, hd]` rotated by the angles
/// of `cos`/`sin` `[B, S, 1, hd/2]`.
pub(crate) fn rope_pairs<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let shape = x.dims();
    let [_, _, h, hd] = shape;
    let x = contiguous(into_flex(x));
    let (cos, sin) = (
        contiguous(into_flex(cos.clone())),
        contiguous(into_flex(sin.clone())),
    );
    let (xs, c, s) = (slice(&x), slice(&cos), slice(&sin));
    let mut out = vec![0f32; xs.len()];
    // One task per block of positions; each position has H heads sharing one row of angles.
    let positions = (CHUNK / (h * hd)).max(1);
    out.par_chunks_mut(positions * h * hd)
        .zip(xs.par_chunks(positions * h * hd))
        .zip(
            c.par_chunks(positions * hd / 2)
                .zip(s.par_chunks(positions * hd / 2)),
        )
        .for_each(|((o, x), (c, s))| {
            let pos = o.chunks_exact_mut(h * hd).zip(x.chunks_exact(h * hd));
            for ((o, x), (c, s)) in pos.zip(c.chunks_exact(hd / 2).zip(s.chunks_exact(hd / 2))) {
                for (o, x) in o.chunks_exact_mut(hd).zip(x.chunks_exact(hd)) {
                    rotate_pairs(o, x, c, s);
                }
            }
        });
    from_flex(tensor_of(out, &shape))
}

/// Rotate-half RoPE (Gemma-2, Qwen3): `x·cos + rotate_half(x)·sin` for `x` `[B, H, L, hd]` at
/// any strides with a contiguous last dimension (the models pass head-first views of `[B, L, H,
/// hd]` projections, read in place), `cos`/`sin` `[1, 1, L, hd]`; returns a contiguous tensor.
pub(crate) fn rope_half<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let shape = x.dims();
    let [_, h, l, hd] = shape;
    let x = row_readable(into_flex(x));
    let (cos, sin) = (
        contiguous(into_flex(cos.clone())),
        contiguous(into_flex(sin.clone())),
    );
    let (c, s) = (slice(&cos), slice(&sin));
    let st = x.layout().strides();
    let [s0, s1, s2] = [st[0], st[1], st[2]].map(|s| s as usize);
    let (start, xs) = (x.layout().start_offset(), x.storage::<f32>());
    let mut out = vec![0f32; shape.iter().product()];
    let rows = (CHUNK / hd.max(1)).max(1);
    out.par_chunks_mut(rows * hd)
        .enumerate()
        .for_each(|(task, block)| {
            for (i, o) in block.chunks_exact_mut(hd).enumerate() {
                let row = task * rows + i;
                let (bi, hi, li) = (row / (h * l), row / l % h, row % l);
                let at = start + bi * s0 + hi * s1 + li * s2;
                let range = li * hd..(li + 1) * hd;
                rotate_half(o, &xs[at..at + hd], &c[range.clone()], &s[range]);
            }
        });
    from_flex(tensor_of(out, &shape))
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn rotate_half(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (o1, o2) = out.split_at_mut(half);
    let (x1, x2) = x.split_at(half);
    let (c1, c2) = cos.split_at(half);
    let (s1, s2) = sin.split_at(half);
    for i in 0..half {
        o1[i] = x1[i] * c1[i] - x2[i] * s1[i];
        o2[i] = x2[i] * c2[i] + x1[i] * s2[i];
    }
}

#[inline(always)]
fn rotate_pairs(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32]) {
    for (((o, x), &c), &s) in out
        .chunks_exact_mut(2)
        .zip(x.chunks_exact(2))
        .zip(cos)
        .zip(sin)
    {
        o[0] = x[0] * c - x[1] * s;
        o[1] = x[0] * s + x[1] * c;
    }
}

/// `residual + x · rsqrt(mean(x²) + eps) · weight · scale[b]` over the last dimension, for the
/// rows of sample `b`, with `scale` and `residual` optional.
///
/// # Shapes
/// `x`, `residual`: `[B, …, D]`; `weight`: `[D]`; `scale`: `[B, 1, D]`.
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
    scale: Option<Tensor<B, 3>>,
    residual: Option<Tensor<B, D>>,
) -> Tensor<B, D> {
    let shape = x.dims();
    let dim = shape[D - 1];
    let x = contiguous(into_flex(x));
    let weight = contiguous(into_flex(weight));
    let scale = scale.map(|s| contiguous(into_flex(s)));
    let residual = residual.map(|r| contiguous(into_flex(r)));
    let (xs, w) = (slice(&x), slice(&weight));
    let (scale, residual) = (scale.as_ref().map(slice), residual.as_ref().map(slice));
    let rows_per_sample = (xs.len() / dim / shape[0].max(1)).max(1);
    let mut out = vec![0f32; xs.len()];
    let per_task = (CHUNK / dim).max(1);
    out.par_chunks_mut(per_task * dim)
        .zip(xs.par_chunks(per_task * dim))
        .enumerate()
        .for_each(|(task, (o, x))| {
            let rows = o.chunks_exact_mut(dim).zip(x.chunks_exact(dim));
            for (r, (o, x)) in rows.enumerate() {
                let row = task * per_task + r;
                let sample = row / rows_per_sample;
                rms_norm_row(o, x, w, eps as f32);
                if let Some(s) = scale {
                    mul_assign(o, &s[sample * dim..(sample + 1) * dim]);
                }
                if let Some(res) = residual {
                    add_assign(o, &res[row * dim..(row + 1) * dim]);
                }
            }
        });
    from_flex(tensor_of(out, &shape))
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn rms_norm_row(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let mut sums = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            sums[i] += c[i] * c[i];
        }
    }
    let squares = sums.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>();
    let inv = 1.0 / (squares / x.len() as f32 + eps).sqrt();
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = x * inv * w;
    }
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn mul_assign(out: &mut [f32], by: &[f32]) {
    out.iter_mut().zip(by).for_each(|(o, &b)| *o *= b);
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn add_assign(out: &mut [f32], add: &[f32]) {
    out.iter_mut().zip(add).for_each(|(o, &a)| *o += a);
}

/// Replaces a row of scores by `exp(x − max)` and returns their sum (the softmax denominator).
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub(crate) fn softmax_numerator(row: &mut [f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            maxes[i] = if c[i] > maxes[i] { c[i] } else { maxes[i] };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp(c[i] - max);
            sums[i] += c[i];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum
}

/// `eˣ` within 2 ulp for `x` in [−87.3, 88] (outside, the value at the nearer end: ≈ 1e-38 or
/// ≈ 1.7e38), branch-free so that it vectorises: `2ⁿ · p(r)` with `n = round(x / ln 2)`,
/// `r = x − n·ln 2` (Cody–Waite, two parts) and `p` the degree-7 Taylor polynomial on
/// `|r| ≤ ln 2 / 2`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in any vector width.
    const ROUND: f32 = 12_582_912.0;
    let x = if x > -87.3 { x } else { -87.3 };
    let x = if x < 88.0 { x } else { 88.0 };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ from its exponent bits; n ∈ [−126, 127] here. `t`'s low mantissa bits already hold n
    // (its bits are ROUND's plus n), so integer arithmetic gets there: `n as i32` would saturate
    // and check for NaN one lane at a time, which kept this loop scalar (9 % of a CFG step).
    p * f32::from_bits(t.to_bits().wrapping_add(127).wrapping_sub(ROUND.to_bits()) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised exp against the standard library's over its whole input range.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f32;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2e6;
            let want = x.exp();
            worst = worst.max(((exp(x) - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    /// Every path of the softmax numerator (widths, remainders) against a scalar reference.
    #[test]
    fn softmax_numerator_matches_scalar() {
        for len in [1, 5, 16, 17, 100, 1023] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 97) as f32 * 0.37 - 20.0)
                .collect();
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let want: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            let mut got = row.clone();
            let sum = softmax_numerator(&mut got);
            let want_sum: f32 = want.iter().sum();
            assert!((sum - want_sum).abs() <= want_sum * 1e-6, "{len}: {sum}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= w * 3e-7, "{len}: {g} vs {w}");
            }
        }
    }
}
