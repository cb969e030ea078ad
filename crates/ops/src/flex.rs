//! Attention on Flex (CPU) as one fused, threaded kernel.
//!
//! Burn 0.21's Flex attention runs one (batch, head) at a time on one thread with a scalar `exp`,
//! and needs contiguous, head-major inputs, so NextDiT's `q`/`k`/`v` (views of the fused qkv
//! projection) were copied three times per layer and the output once more. This kernel reads the
//! views where they lie (any strides with a contiguous head dimension), serves each KV head's
//! query group without repeating K/V, stops at each sample's valid keys, and writes the output
//! `[B, S, H, D]` in the layout the output projection reads, so the caller's transpose is free.
//! Work is split over Flex's rayon pool by (sample, head, block of query rows); each block is two
//! `gemm` calls (the crate Flex's own matmul uses) around a softmax with a vectorised `exp`.
//! No crate offers this for Burn tensors, hence the hand-written kernel; it is tested against the
//! backend's generic attention (`tests/attention.rs`).
//!
//! The workspace's only `unsafe`: `gemm`'s raw-pointer API and the `target_feature` dispatch.
#![allow(unsafe_code)]

use std::any::{Any, TypeId};

use burn::tensor::{Bytes, DType, FloatDType, Tensor, TensorPrimitive, backend::Backend};
use burn_flex::{FlexTensor, Layout};
use gemm::Parallelism;
use rayon::prelude::*;

/// Query rows per task: the score block (rows × keys) stays in L2 at 4 k keys.
const ROWS: usize = 64;

/// The Flex kernel for `B` when `B` is Flex (its float tensors are `FlexTensor`s), or the inputs
/// back unchanged for every other backend. Shapes and `kv_lens` are as in [`crate::attention`],
/// already validated; half-precision inputs are computed in f32 (as Flex's own kernel does).
#[allow(clippy::type_complexity)]
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    kv_lens: Option<&[usize]>,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<FlexTensor>() {
        return Err((q, k, v));
    }
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| match t.dtype() {
        DType::F32 => t,
        _ => t.cast(FloatDType::F32),
    };
    let (Some(qf), Some(kf), Some(vf)) = (flex(f32(q)), flex(f32(k)), flex(f32(v))) else {
        unreachable!("float tensors of a backend whose primitive is FlexTensor are FlexTensors")
    };
    let out = attention_f32(&qf, &kf, &vf, kv_lens);
    let boxed: Box<dyn Any> = Box::new(out);
    let out = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("B's float primitive is FlexTensor"));
    let out = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(out));
    Ok(match dtype {
        DType::F32 => out,
        other => out.cast(FloatDType::from(other)),
    })
}

/// The `FlexTensor` behind `t` (`None` for a quantised tensor or another backend).
fn flex<B: Backend>(t: Tensor<B, 4>) -> Option<FlexTensor> {
    let TensorPrimitive::Float(p) = t.into_primitive() else {
        return None;
    };
    let boxed: Box<dyn Any> = Box::new(p);
    boxed.downcast::<FlexTensor>().ok().map(|t| *t)
}

/// A 4-D f32 operand: its storage (made contiguous first if its last dimension is strided) and
/// element strides.
struct Operand {
    tensor: FlexTensor,
    strides: [usize; 4],
}

impl Operand {
    fn new(t: &FlexTensor) -> Self {
        let layout = t.layout();
        let readable = layout.strides()[3] == 1 && layout.has_positive_strides();
        let tensor = if readable {
            t.clone()
        } else {
            t.to_contiguous()
        };
        let s = tensor.layout().strides();
        let strides = [s[0], s[1], s[2], s[3]].map(|s| s as usize);
        Self { tensor, strides }
    }

    /// Pointer to element `[b, h, row, 0]`.
    fn at(&self, b: usize, h: usize, row: usize) -> *const f32 {
        let offset = self.tensor.layout().start_offset()
            + b * self.strides[0]
            + h * self.strides[1]
            + row * self.strides[2];
        self.tensor.storage::<f32>()[offset..].as_ptr()
    }
}

/// `softmax(q·kᵀ/√d)·v` for f32 `q` `[B, H, S_q, D]`, `k`, `v` `[B, H_kv, S_kv, D]`, returned as
/// a `[B, H, S_q, D]` view of a contiguous `[B, S_q, H, D]` buffer.
fn attention_f32(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    kv_lens: Option<&[usize]>,
) -> FlexTensor {
    let [b, h, s_q, d] = dims(q);
    let [_, kv_heads, s_kv, _] = dims(k);
    let (q, k, v) = (Operand::new(q), Operand::new(k), Operand::new(v));
    let group = h / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row_stride = h * d;
    let mut out = vec![0f32; b * s_q * row_stride];
    // One task per block of query rows of one sample, all heads: its output is one contiguous
    // chunk of `[B, S_q, H, D]` (split per sample first, so that no block straddles two).
    out.par_chunks_mut(s_q * row_stride)
        .enumerate()
        .flat_map(|(bi, sample)| {
            sample
                .par_chunks_mut(ROWS * row_stride)
                .enumerate()
                .map(move |(block, chunk)| (bi, block * ROWS, chunk))
        })
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, (bi, r0, chunk)| {
            let rows = chunk.len() / row_stride;
            let keys = kv_lens.map_or(s_kv, |lens| lens[bi]);
            scores.resize(rows * keys, 0.0);
            for hi in 0..h {
                let kh = hi / group;
                // SAFETY: `gemm` reads `rows × d` elements of q from [bi, hi, r0, 0] and `keys × d`
                // of k from [bi, kh, 0, 0] at the operands' own strides (in bounds: r0 + rows ≤
                // S_q, keys ≤ S_kv, d the head dim), and writes the `rows × keys` scores.
                unsafe {
                    gemm::gemm(
                        rows,
                        keys,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        q.at(bi, hi, r0),
                        1,
                        q.strides[2] as isize,
                        k.at(bi, kh, 0),
                        k.strides[2] as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                let sums: Vec<f32> = scores
                    .chunks_exact_mut(keys)
                    .map(softmax_numerator)
                    .collect();
                let head = &mut chunk[hi * d..];
                // SAFETY: reads the scores and `keys × d` of v from [bi, kh, 0, 0] (in bounds as
                // above) and writes `rows × d` elements at row stride H·D from head `hi` of this
                // task's own chunk, which ends at its last row's last head.
                unsafe {
                    gemm::gemm(
                        rows,
                        d,
                        keys,
                        head.as_mut_ptr(),
                        1,
                        row_stride as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        keys as isize,
                        v.at(bi, kh, 0),
                        1,
                        v.strides[2] as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for (r, sum) in sums.into_iter().enumerate() {
                    let inv = 1.0 / sum;
                    head[r * row_stride..r * row_stride + d]
                        .iter_mut()
                        .for_each(|x| *x *= inv);
                }
            }
        });
    let layout = Layout::new(
        [b, h, s_q, d].into(),
        vec![
            (s_q * row_stride) as isize,
            d as isize,
            row_stride as isize,
            1,
        ],
        0,
    );
    FlexTensor::new(Bytes::from_elems(out), layout, DType::F32)
}

fn dims(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// Replaces a row of scores by `exp(x − max)` and returns their sum (the softmax denominator).
fn softmax_numerator(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { softmax_numerator_avx512(row) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { softmax_numerator_avx2(row) };
        }
    }
    softmax_numerator_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn softmax_numerator_avx512(row: &mut [f32]) -> f32 {
    softmax_numerator_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_numerator_avx2(row: &mut [f32]) -> f32 {
    softmax_numerator_generic(row)
}

/// Lanes of the accumulators: independent sums the compiler keeps in vector registers.
const LANES: usize = 16;

/// Written as lane-wise loops over fixed-size chunks so that it vectorises at whatever width the
/// caller was compiled for.
#[inline(always)]
fn softmax_numerator_generic(row: &mut [f32]) -> f32 {
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

/// `eˣ` for `x ≤ 0` within 2 ulp (≥ −87.3: smaller inputs give ≈ 1e-38 instead of less),
/// branch-free so that it vectorises: `2ⁿ · p(r)` with `n = round(x / ln 2)`,
/// `r = x − n·ln 2` (Cody–Waite, two parts) and `p` the degree-7 Taylor polynomial on
/// `|r| ≤ ln 2 / 2`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in any vector width.
    const ROUND: f32 = 12_582_912.0;
    let x = if x > -87.3 { x } else { -87.3 };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ from its exponent bits; n ∈ [−126, 0] here.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised exp against the standard library's over its whole input range.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f32;
        for i in 0..=1_000_000 {
            let x = -87.0 * i as f32 / 1e6;
            let want = x.exp();
            let got = exp(x);
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
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
            for f in [softmax_numerator, softmax_numerator_generic] {
                let mut got = row.clone();
                let sum = f(&mut got);
                let want_sum: f32 = want.iter().sum();
                assert!((sum - want_sum).abs() <= want_sum * 1e-6, "{len}: {sum}");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= w * 3e-7, "{len}: {g} vs {w}");
                }
            }
        }
    }
}
