//! Tiled decoding and encoding: bounded memory for large images.
//!
//! The input is cut into overlapping tiles; each is decoded (or encoded) alone and the results are
//! blended with linear ramps across the overlaps. Peak activation memory follows the tile size
//! instead of the image size. Because GroupNorm statistics and the mid-block attention see one tile
//! at a time, the result differs slightly from the untiled one (measured in the tests).

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{Vae, VaeError};

/// Tile size and overlap, in latent pixels (×8 for image pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile side (latent pixels).
    pub tile: usize,
    /// Overlap between neighbouring tiles (latent pixels).
    pub overlap: usize,
}

impl Default for Tiling {
    /// 64-pixel latent tiles (512 image pixels) with an 8-pixel (64 image pixels) overlap, as
    /// ComfyUI's tiled VAE nodes default to.
    fn default() -> Self {
        Self {
            tile: 64,
            overlap: 8,
        }
    }
}

impl Tiling {
    fn validate(&self) -> Result<(), VaeError> {
        if self.tile == 0 || self.overlap >= self.tile {
            return Err(VaeError::Tiling(format!(
                "tile {} and overlap {}: the tile must be positive and larger than the overlap",
                self.tile, self.overlap
            )));
        }
        Ok(())
    }
}

/// Tile starts along an axis of length `n`: the fewest tiles whose overlaps are at least
/// `overlap`, spread evenly so that every seam gets the same blending width.
fn starts(n: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let count = (n - overlap).div_ceil(tile - overlap);
    (0..count).map(|i| i * (n - tile) / (count - 1)).collect()
}

/// Blending weights along one axis of an output tile of length `len`: ramps of `ramp` values at
/// the sides that overlap a neighbour.
fn ramp(len: usize, ramp: usize, first: bool, last: bool) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let up = if first {
                1.0
            } else {
                ((i + 1) as f32 / (ramp + 1) as f32).min(1.0)
            };
            let down = if last {
                1.0
            } else {
                ((len - i) as f32 / (ramp + 1) as f32).min(1.0)
            };
            up.min(down)
        })
        .collect()
}

/// Runs `f` on overlapping tiles of `input` and blends the outputs. `scale` is (numerator,
/// denominator) of output pixels per input pixel: 8/1 to decode, 1/8 to encode.
fn tiled<B: Backend>(
    input: Tensor<B, 4>,
    tile: usize,
    overlap: usize,
    scale: (usize, usize),
    f: impl Fn(Tensor<B, 4>) -> Result<Tensor<B, 4>, VaeError>,
) -> Result<Tensor<B, 4>, VaeError> {
    let [b, _, h, w] = input.dims();
    let out = |v: usize| v * scale.0 / scale.1;
    let device = input.device();
    let (ys, xs) = (starts(h, tile, overlap), starts(w, tile, overlap));
    let mut acc: Option<Tensor<B, 4>> = None;
    let mut weight_sum = Tensor::<B, 4>::zeros([1, 1, out(h), out(w)], &device);
    for (iy, &y) in ys.iter().enumerate() {
        for (ix, &x) in xs.iter().enumerate() {
            let (th, tw) = (tile.min(h), tile.min(w));
            let piece = f(input
                .clone()
                .slice([0..b, 0..input.dims()[1], y..y + th, x..x + tw]))?;
            let [_, c_out, oh, ow] = piece.dims();
            let wy = ramp(oh, out(overlap), iy == 0, iy + 1 == ys.len());
            let wx = ramp(ow, out(overlap), ix == 0, ix + 1 == xs.len());
            let mask: Vec<f32> = wy
                .iter()
                .flat_map(|a| wx.iter().map(move |b| a * b))
                .collect();
            let mask = Tensor::<B, 4>::from_data(TensorData::new(mask, [1, 1, oh, ow]), &device);
            let region = [0..b, 0..c_out, out(y)..out(y) + oh, out(x)..out(x) + ow];
            let total =
                acc.get_or_insert_with(|| Tensor::zeros([b, c_out, out(h), out(w)], &device));
            let blended = total.clone().slice(region.clone()) + piece * mask.clone();
            *total = total.clone().slice_assign(region, blended);
            let wregion = [0..1, 0..1, out(y)..out(y) + oh, out(x)..out(x) + ow];
            weight_sum = weight_sum
                .clone()
                .slice_assign(wregion.clone(), weight_sum.slice(wregion) + mask);
        }
    }
    Ok(acc
        .map(|a| a / weight_sum)
        .unwrap_or_else(|| Tensor::zeros([b, 0, 0, 0], &device)))
}

impl<B: Backend> Vae<B> {
    /// [`Vae::decode`] in overlapping tiles.
    pub fn decode_tiled(&self, z: Tensor<B, 4>, tiling: Tiling) -> Result<Tensor<B, 4>, VaeError> {
        tiling.validate()?;
        let f = self.config().downscale();
        tiled(z, tiling.tile, tiling.overlap, (f, 1), |t| self.decode(t))
    }

    /// [`Vae::encode`] in overlapping tiles (tile and overlap in latent pixels).
    pub fn encode_tiled(
        &self,
        image: Tensor<B, 4>,
        tiling: Tiling,
    ) -> Result<Tensor<B, 4>, VaeError> {
        tiling.validate()?;
        let f = self.config().downscale();
        tiled(image, tiling.tile * f, tiling.overlap * f, (1, f), |t| {
            self.encode(t)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_starts_cover_the_axis() {
        assert_eq!(starts(10, 16, 4), [0]);
        assert_eq!(starts(16, 16, 4), [0]);
        assert_eq!(starts(40, 16, 4), [0, 12, 24]);
        assert_eq!(starts(41, 16, 4), [0, 8, 16, 25]);
        assert_eq!(starts(128, 64, 8), [0, 32, 64]);
        // Every overlap is at least the requested one, and the last tile ends at the edge.
        for (n, t, o) in [(100, 16, 4), (129, 64, 8), (17, 16, 15), (500, 64, 8)] {
            let s = starts(n, t, o);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().unwrap() + t, n);
            assert!(
                s.windows(2).all(|w| w[0] + t >= w[1] + o),
                "{n} {t} {o}: {s:?}"
            );
        }
    }

    #[test]
    fn ramps_are_one_inside_and_rise_across_overlaps() {
        assert_eq!(ramp(4, 2, true, true), [1.0; 4]);
        let r = ramp(6, 2, false, false);
        assert_eq!(r, [1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 2.0 / 3.0, 1.0 / 3.0]);
    }

    #[test]
    fn invalid_tiling() {
        assert!(
            Tiling {
                tile: 8,
                overlap: 8
            }
            .validate()
            .is_err()
        );
        assert!(
            Tiling {
                tile: 0,
                overlap: 0
            }
            .validate()
            .is_err()
        );
        assert!(Tiling::default().validate().is_ok());
    }
}
