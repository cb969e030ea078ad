//! Attention on Flex (CPU) as one fused, threaded kernel.
//!
//! Burn 0.21's Flex attention runs one (batch, head) at a time on one thread with a scalar `exp`,
//! and needs contiguous, head-major inputs, so NextDiT's `q`/`k`/`v` (views of the fused qkv
//! projection) were copied three times per layer and the output once more. This kernel reads the
//! views where they lie (any strides with a contiguous head dimension), serves each KV head's
//! query group without repeating K/V, stops at each sample's valid keys, and writes the output
//! `[B, S, H, D]` in the layout the output projection reads, so the caller's transpose is free.
//! Work is split over Flex's rayon pool by (sample, block of query rows), all heads per task, so
//! each task owns one contiguous piece of the output; per head, a block is two `gemm` calls (the
//! crate Flex's own matmul uses) around a softmax with a vectorised `exp`.
//! No crate offers this for Burn tensors, hence the hand-written kernel; it is tested against the
//! backend's generic attention (`tests/attention.rs`).
//!
//! `unsafe` for `gemm`'s raw-pointer API (as in `linear.rs` and `conv.rs`, nowhere else).
#![allow(unsafe_code)]

use burn::tensor::{Bytes, DType, FloatDType, Tensor, backend::Backend};
use burn_flex::{FlexTensor, Layout};
use gemm::Parallelism;
use rayon::prelude::*;

use super::math::softmax_numerator;
use super::{from_flex, into_flex, is_flex, row_readable};

/// Query rows per task: the score block (rows × keys) stays in L2 at 4 k keys.
const ROWS: usize = 64;

/// Which keys each query row sees: `0..kv_lens[b]` (all keys without lengths), or, for causal
/// self-attention over right-padded samples, keys `kv ≤ row` with `kv < lens[b]` and, with a
/// window `w`, `row − kv < w`.
#[derive(Clone, Copy)]
pub(crate) enum Visible<'a> {
    Keys(Option<&'a [usize]>),
    Causal {
        lens: &'a [usize],
        window: Option<usize>,
    },
}

impl Visible<'_> {
    /// The visible keys of query `row` of sample `b`, of `s_kv`.
    fn range(&self, b: usize, row: usize, s_kv: usize) -> std::ops::Range<usize> {
        match *self {
            Self::Keys(lens) => 0..lens.map_or(s_kv, |l| l[b]),
            Self::Causal { lens, window } => {
                let end = (row + 1).min(lens[b]);
                let start = window.map_or(0, |w| (row + 1).saturating_sub(w));
                start.min(end)..end
            }
        }
    }
}

/// The Flex kernel for `B` when `B` is Flex, or the inputs back unchanged for every other
/// backend. Shapes are as in [`crate::attention`], already validated, with `scale` applied to the
/// scores; half-precision inputs are computed in f32 (as Flex's own kernel does).
#[allow(clippy::type_complexity)]
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    visible: Visible<'_>,
    scale: f32,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    if !is_flex::<B>() {
        return Err((q, k, v));
    }
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| into_flex(t.cast(FloatDType::F32));
    let out = from_flex(attention_f32(&f32(q), &f32(k), &f32(v), visible, scale));
    Ok(match dtype {
        DType::F32 => out,
        other => out.cast(FloatDType::from(other)),
    })
}

/// A 4-D f32 operand: its storage (made contiguous first if its last dimension is strided) and
/// element strides.
struct Operand {
    tensor: FlexTensor,
    strides: [usize; 4],
}

impl Operand {
    fn new(t: &FlexTensor) -> Self {
        let tensor = row_readable(t.clone());
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

/// `softmax(scale·q·kᵀ)·v` over the visible keys for f32 `q` `[B, H, S_q, D]`, `k`, `v`
/// `[B, H_kv, S_kv, D]`, returned as a `[B, H, S_q, D]` view of a contiguous `[B, S_q, H, D]`
/// buffer. A row that sees no key gets zeros.
fn attention_f32(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    visible: Visible<'_>,
    scale: f32,
) -> FlexTensor {
    let [b, h, s_q, d] = dims(q);
    let [_, kv_heads, s_kv, _] = dims(k);
    let (q, k, v) = (Operand::new(q), Operand::new(k), Operand::new(v));
    let group = h / kv_heads;
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
            // The block's keys: the union of its rows' visible ranges.
            let ranges: Vec<_> = (r0..r0 + rows)
                .map(|r| visible.range(bi, r, s_kv))
                .collect();
            let first = ranges.iter().map(|r| r.start).min().unwrap_or(0);
            let last = ranges.iter().map(|r| r.end).max().unwrap_or(0).max(first);
            let keys = last - first;
            if keys == 0 {
                return;
            }
            scores.resize(rows * keys, 0.0);
            for hi in 0..h {
                let kh = hi / group;
                // SAFETY: `gemm` reads `rows × d` elements of q from [bi, hi, r0, 0] and `keys × d`
                // of k from [bi, kh, first, 0] at the operands' own strides (in bounds: r0 + rows
                // ≤ S_q, first + keys ≤ S_kv, d the head dim), and writes the `rows × keys` scores.
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
                        k.at(bi, kh, first),
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
                let inverse_sums: Vec<f32> = scores
                    .chunks_exact_mut(keys)
                    .zip(&ranges)
                    .map(|(row, range)| {
                        let (lo, hi) = (range.start - first, range.end - first);
                        row[..lo].fill(0.0);
                        row[hi..].fill(0.0);
                        if lo == hi {
                            0.0
                        } else {
                            1.0 / softmax_numerator(&mut row[lo..hi])
                        }
                    })
                    .collect();
                let head = &mut chunk[hi * d..];
                // SAFETY: reads the scores and `keys × d` of v from [bi, kh, first, 0] (in bounds
                // as above) and writes `rows × d` elements at row stride H·D from head `hi` of
                // this task's own chunk, which ends at its last row's last head.
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
                        v.at(bi, kh, first),
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
                for (r, inv) in inverse_sums.into_iter().enumerate() {
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
