//! Linear layers on Flex (CPU): `x·W + b` as one threaded GEMM with the bias fused in.
//!
//! Flex hands every matmul to `gemm` with its own threading, which splits the work poorly when
//! few rows meet many columns: a text encoder's 96 tokens × 768 → 3072 ran at a third of the rate
//! of the same call split by columns (65 against 211 GFLOP/s on two AVX-512 cores, PyTorch's MKL
//! 225; `docs/performance.md`). The bias was then added in a second, broadcast pass. Here the
//! output is cut into blocks of columns (and of rows once there are more threads than column
//! blocks), one single-threaded `gemm` per block on Flex's rayon pool, each block starting from
//! its bias. Tested against Burn's `Linear::forward` (`tests.rs`).
#![allow(unsafe_code)]

use burn::nn::Linear;
use burn::tensor::{DType, Tensor, backend::Backend};
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;

use super::{contiguous, filled_by, from_flex, into_flex, slice, tensor_of};

/// Below this many multiply-adds one call on one thread is faster than splitting.
const SERIAL_WORK: usize = 1 << 18;
/// Narrowest column block (a multiple of gemm's 16-wide AVX-512 register tile).
const MIN_COLS: usize = 64;
/// Shortest row block.
const MIN_ROWS: usize = 32;

/// The Flex kernel for f32 `x` and parameters on Flex, or `x` back for the generic path.
pub(crate) fn linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let f32 = |dtype: DType| dtype == DType::F32;
    if !super::fast::<B>(x.dtype())
        || !f32(weight.dtype())
        || bias.as_ref().is_some_and(|b| !f32(b.dtype()))
    {
        return Err(x);
    }
    let mut dims = x.dims();
    let [k, n] = weight.dims();
    dims[D - 1] = n;
    let x = contiguous(into_flex(x));
    let weight = into_flex(weight);
    let weight = if weight.layout().has_positive_strides() {
        weight
    } else {
        weight.to_contiguous()
    };
    let bias = bias.map(|b| contiguous(into_flex(b)));
    let m = dims[..D - 1].iter().product();
    let out = linear_f32(slice(&x), [m, k, n], &weight, bias.as_ref().map(slice));
    Ok(from_flex(tensor_of(out, &dims)))
}

/// `x·W (+ b)` for row-major `x` `[m, k]`, `W` `[k, n]` at any positive strides, `b` `[n]`.
fn linear_f32(x: &[f32], [m, k, n]: [usize; 3], w: &FlexTensor, bias: Option<&[f32]>) -> Vec<f32> {
    let strides = w.layout().strides();
    let (w_rs, w_cs) = (strides[0] as usize, strides[1] as usize);
    let w = &w.storage::<f32>()[w.layout().start_offset()..];
    let threads = rayon::current_num_threads();
    let (col_blocks, row_blocks) = if m * n * k < SERIAL_WORK || threads == 1 {
        (1, 1)
    } else {
        let cols = threads.min(n.div_ceil(MIN_COLS));
        (
            cols,
            threads.div_ceil(cols).min(m.div_ceil(MIN_ROWS)).max(1),
        )
    };
    let col_width = n.div_ceil(col_blocks).next_multiple_of(16).min(n);
    let row_height = m.div_ceil(row_blocks);
    let blocks: Vec<(usize, usize)> = (0..m)
        .step_by(row_height.max(1))
        .flat_map(|r0| (0..n).step_by(col_width.max(1)).map(move |c0| (r0, c0)))
        .collect();
    let block = |dst: Dst, (r0, c0): (usize, usize)| {
        let (rows, cols) = (row_height.min(m - r0), col_width.min(n - c0));
        let dst = dst.at(r0 * n + c0);
        if let Some(bias) = bias {
            for r in 0..rows {
                // SAFETY: row `r0 + r`, columns `c0..c0 + cols` of `out` belong to this block
                // alone (the blocks tile the output without overlap).
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * n), cols) };
                row.copy_from_slice(&bias[c0..c0 + cols]);
            }
        }
        // SAFETY: reads `rows × k` of `x` from row r0 and `k × cols` of `w` from column c0 (in
        // bounds: r0 + rows ≤ M, c0 + cols ≤ n, and `w` spans k × n at its strides), and writes
        // this block's `rows × cols` of `out`, which no other block touches.
        unsafe {
            gemm_into(
                [rows, cols, k],
                (dst, n, bias.is_some()),
                (x[r0 * k..].as_ptr(), 1, k),
                (w[c0 * w_cs..].as_ptr(), w_cs, w_rs),
            );
        }
    };
    // SAFETY: the blocks tile the output, and each writes all of its values (the bias then
    // accumulating, or `gemm` overwriting without reading).
    unsafe {
        filled_by(m * n, |out| {
            let dst = Dst(out.as_mut_ptr().cast());
            blocks.into_par_iter().for_each(|b| block(dst, b));
        })
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`) on the calling thread, for
/// `[m, n, k]`, `dst` row-major at row stride `dst_rs`, and `lhs` (`m × k`) and `rhs` (`k × n`)
/// at (column, row) strides.
///
/// # Safety
/// The pointers must address matrices of those shapes and strides, and `dst` must be written by
/// nobody else meanwhile.
pub(super) unsafe fn gemm_into(
    [m, n, k]: [usize; 3],
    (dst, dst_rs, accumulate): (*mut f32, usize, bool),
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// An output buffer's pointer, shared by tasks that write disjoint parts of it (blocks of the
/// linear layers' output here, rows of the convolutions' in `conv.rs`).
#[derive(Clone, Copy)]
pub(super) struct Dst(pub(super) *mut f32);

// SAFETY: every task writes only its own part of the buffer (see `linear_f32`, `conv2d_f32`).
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

impl Dst {
    /// The pointer `offset` elements in (within the buffer: offsets come from in-range parts).
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: `offset` < the buffer's length, as the caller's part lies inside it.
        unsafe { self.0.add(offset) }
    }
}
