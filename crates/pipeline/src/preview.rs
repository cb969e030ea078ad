//! Cheap previews during sampling: a fixed linear map of the 16 latent channels to RGB, as
//! ComfyUI's `Latent2RGBPreviewer` does for FLUX-VAE latents (which Lumina 2 uses).
//!
//! It costs one small matmul per preview instead of a VAE decode, and shows composition and
//! colours at 1/8 of the image's resolution.

use burn::tensor::{Tensor, backend::Backend};
use image::RgbImage;

/// ComfyUI's `latent_formats.Flux.latent_rgb_factors` (one row per latent channel: R, G, B),
/// fitted on model-space latents (after the VAE's shift and scale).
const FLUX_RGB_FACTORS: [[f32; 3]; 16] = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
];
/// ComfyUI's `latent_rgb_factors_bias` for FLUX latents.
const FLUX_RGB_BIAS: [f32; 3] = [-0.0329, -0.0718, -0.0851];

/// The preview of batch item 0 of a model-space latent `[B, 16, h, w]`: an `w × h` RGB image,
/// `x·F + b` clamped to [-1, 1], mapped to 0..255 and rounded, as ComfyUI's `preview_to_image`.
/// `None` for latents that do not have 16 channels.
///
/// # Shapes
/// - `latent`: `[B, 16, h, w]`
pub fn latent_preview<B: Backend>(latent: &Tensor<B, 4>) -> Option<RgbImage> {
    let [_, c, h, w] = latent.dims();
    if c != FLUX_RGB_FACTORS.len() {
        return None;
    }
    let values = latent
        .clone()
        .slice(0..1)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .ok()?;
    let plane = h * w;
    let mut pixels = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        for (rgb, bias) in FLUX_RGB_BIAS.iter().enumerate() {
            let v = FLUX_RGB_FACTORS
                .iter()
                .enumerate()
                .fold(*bias, |acc, (ch, f)| acc + values[ch * plane + p] * f[rgb]);
            pixels.push(((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn maps_channels_with_comfyui_factors() {
        let device = Default::default();
        // Channel 4 alone at 1.0: R = 0.0859 − 0.0329, etc.; batch item 1 must not leak in.
        let mut data = vec![0.0f32; 2 * 16 * 2 * 3];
        data[4 * 6] = 1.0;
        data[16 * 6 + 4 * 6 + 1] = 5.0;
        let latent =
            Tensor::<Flex, 1>::from_floats(data.as_slice(), &device).reshape([2, 16, 2, 3]);
        let image = latent_preview(&latent).expect("16 channels");
        assert_eq!(image.dimensions(), (3, 2));
        let expect = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
        assert_eq!(
            image.get_pixel(0, 0).0,
            [
                expect(0.0859 - 0.0329),
                expect(0.0721 - 0.0718),
                expect(0.0329 - 0.0851)
            ]
        );
        assert_eq!(
            image.get_pixel(1, 0).0,
            [expect(-0.0329), expect(-0.0718), expect(-0.0851)]
        );
        let four = Tensor::<Flex, 4>::zeros([1, 4, 2, 2], &device);
        assert!(latent_preview(&four).is_none());
    }
}
