//! 2-D convolutions on Flex (CPU) at stride 1: im2col by blocks of output rows, each block one
//! GEMM that writes its rows of the output in place.
//!
//! Flex builds the whole im2col matrix at once (zeroed first, filled element by element through a
//! closure) and then runs one GEMM: in the VAE decoder that bookkeeping took more time than the
//! GEMM itself. Here each task takes a few output rows of one image, copies their patches into a
//! buffer that stays in cache (whole rows at a time, zeros at the borders; a 1×1 convolution
//! without padding reads the input directly), and multiplies it by the `[C_out, C_in·kh·kw]`
//! weights straight into the output, which starts from the bias. Tested against Burn's
//! `Conv2d::forward` (`tests.rs`).
#![allow(unsafe_code)]

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, backend::Backend};
use rayon::prelude::*;

use super::linear::{Dst, gemm_into};
use super::{contiguous, filled_by, from_flex, into_flex, slice, tensor_of};

/// Target size (in f32s) of a task's patch buffer: a few output rows fit in L2.
const PATCH: usize = 1 << 18;

/// Shapes of one call: input `[n, c_in, h, w]`, kernel `kh×kw`, padding (top, left, bottom,
/// right), output `[n, c_out, ho, wo]`.
#[derive(Clone, Copy)]
struct Geometry {
    c_in: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    top: usize,
    left: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
}

/// The Flex kernel for f32 stride-1, ungrouped, undilated convolutions with explicit or no
/// padding, or `x` back for the generic path.
pub(crate) fn conv2d<B: Backend>(
    layer: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let (top, left, bottom, right) = match layer.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Same => return Err(x),
    };
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let f32 = |dtype: DType| dtype == DType::F32;
    let [n, c_in, h, w] = x.dims();
    let [c_out, wc_in, kh, kw] = weight.dims();
    let (hp, wp) = (h + top + bottom, w + left + right);
    if !super::fast::<B>(x.dtype())
        || !f32(weight.dtype())
        || bias.as_ref().is_some_and(|b| !f32(b.dtype()))
        || layer.stride != [1, 1]
        || layer.dilation != [1, 1]
        || layer.groups != 1
        || wc_in != c_in
        || kh == 0
        || kw == 0
        || hp < kh
        || wp < kw
    {
        return Err(x);
    }
    let g = Geometry {
        c_in,
        h,
        w,
        kh,
        kw,
        top,
        left,
        c_out,
        ho: hp - kh + 1,
        wo: wp - kw + 1,
    };
    let x = contiguous(into_flex(x));
    let weight = contiguous(into_flex(weight));
    let bias = bias.map(|b| contiguous(into_flex(b)));
    let out = conv2d_f32(slice(&x), slice(&weight), bias.as_ref().map(slice), n, g);
    Ok(from_flex(tensor_of(out, &[n, c_out, g.ho, g.wo])))
}

fn conv2d_f32(x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, g: Geometry) -> Vec<f32> {
    let k = g.c_in * g.kh * g.kw;
    let (plane_in, plane_out) = (g.h * g.w, g.ho * g.wo);
    let direct = g.kh == 1 && g.kw == 1 && g.ho == g.h && g.wo == g.w;
    let threads = rayon::current_num_threads();
    let rows = (PATCH / (k * g.wo).max(1))
        .clamp(1, g.ho.div_ceil(threads.div_ceil(n)))
        .max(1);
    let tasks: Vec<(usize, usize)> = (0..n)
        .flat_map(|b| (0..g.ho).step_by(rows).map(move |y0| (b, y0)))
        .collect();
    let task = |dst: Dst, patch: &mut Vec<f32>, (b, y0): (usize, usize)| {
        let r = rows.min(g.ho - y0);
        let cols = r * g.wo;
        let image = &x[b * g.c_in * plane_in..(b + 1) * g.c_in * plane_in];
        // The right-hand side: `k × cols`, at row stride `rhs_rs`.
        let (rhs, rhs_rs) = if direct {
            (image[y0 * g.w..].as_ptr(), plane_in)
        } else {
            patch.resize(k * cols, 0.0);
            fill_patches(patch, image, g, y0, r);
            (patch.as_ptr(), cols)
        };
        let at = b * g.c_out * plane_out + y0 * g.wo;
        if let Some(bias) = bias {
            for (co, &v) in bias.iter().enumerate() {
                // SAFETY: this task's rows y0..y0 + r of channel `co` of image `b`; no other
                // task writes them.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(dst.at(at + co * plane_out), cols) };
                row.fill(v);
            }
        }
        // SAFETY: reads the `c_out × k` weights, and `k × cols` of the patches (or of the image,
        // rows `y0..y0 + r` of each channel), and writes `c_out × cols` of the output at row
        // stride `plane_out` from this task's first row: in bounds and disjoint from every other
        // task's rows. Without a bias, `gemm` overwrites them without reading.
        unsafe {
            gemm_into(
                [g.c_out, cols, k],
                (dst.at(at), plane_out, bias.is_some()),
                (w.as_ptr(), 1, k),
                (rhs, 1, rhs_rs),
            );
        }
    };
    // SAFETY: the tasks cover every output row of every image, and each writes all `c_out`
    // channels of its rows (above).
    unsafe {
        filled_by(n * g.c_out * plane_out, |out| {
            let dst = Dst(out.as_mut_ptr().cast());
            tasks
                .into_par_iter()
                .for_each_init(Vec::new, |patch, t| task(dst, patch, t));
        })
    }
}

/// The im2col rows of output rows `y0..y0 + r`: row `(ci, ky, kx)` of `patch` holds, for each of
/// those output pixels, the input pixel under tap `(ky, kx)` of channel `ci` (0 in the padding).
fn fill_patches(patch: &mut [f32], image: &[f32], g: Geometry, y0: usize, r: usize) {
    let cols = r * g.wo;
    let mut rows = patch.chunks_exact_mut(cols);
    for ci in 0..g.c_in {
        let channel = &image[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = rows.next().unwrap_or_else(|| unreachable!("k rows"));
                // Output columns whose tap lands inside the input: left ≤ x + kx < left + w.
                let lo = g.left.saturating_sub(kx).min(g.wo);
                let hi = (g.left + g.w).saturating_sub(kx).clamp(lo, g.wo);
                for (yy, out) in row.chunks_exact_mut(g.wo).enumerate() {
                    let y = y0 + yy + ky;
                    if y < g.top || y >= g.top + g.h {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &channel[(y - g.top) * g.w..(y - g.top + 1) * g.w];
                    out[..lo].fill(0.0);
                    if hi > lo {
                        out[lo..hi].copy_from_slice(&src[lo + kx - g.left..hi + kx - g.left]);
                    }
                    out[hi..].fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of a reused buffer is written: patches over NaN equal a direct im2col,
    /// padding included, for blocks at the top, middle and bottom.
    #[test]
    fn patches_overwrite_the_whole_buffer() {
        let g = Geometry {
            c_in: 2,
            h: 5,
            w: 4,
            kh: 3,
            kw: 2,
            top: 1,
            left: 2,
            c_out: 1,
            ho: 5,
            // One column of padding on the right.
            wo: 6,
        };
        let image: Vec<f32> = (0..g.c_in * g.h * g.w).map(|i| i as f32 + 1.0).collect();
        for (y0, r) in [(0, 2), (2, 2), (4, 1)] {
            let k = g.c_in * g.kh * g.kw;
            let mut patch = vec![f32::NAN; k * r * g.wo];
            fill_patches(&mut patch, &image, g, y0, r);
            for (row, values) in patch.chunks_exact(r * g.wo).enumerate() {
                let (ci, ky, kx) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
                for (i, &v) in values.iter().enumerate() {
                    let (y, x) = ((y0 + i / g.wo + ky) as isize, (i % g.wo + kx) as isize);
                    let (y, x) = (y - g.top as isize, x - g.left as isize);
                    let inside = (0..g.h as isize).contains(&y) && (0..g.w as isize).contains(&x);
                    let want = if inside {
                        image[ci * g.h * g.w + y as usize * g.w + x as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "block {y0}, row {row}, column {i}");
                }
            }
        }
    }
}
