//! Conversion between decoder tensors and 8-bit RGB images, exactly as ComfyUI saves and loads them
//! (and 16-bit images, which keep the decoder's precision).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use image::{ImageBuffer, Rgb, RgbImage};

use crate::VaeError;

/// Decoder output `[B, 3, H, W]` → one RGB image per batch item, as ComfyUI saves:
/// `clamp((x + 1) / 2, 0, 1)`, ×255, truncated to 8 bits.
pub fn to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Vec<RgbImage> {
    to_rgb(images, |v| (v * 255.0) as u8)
}

/// Decoder output `[B, 3, H, W]` → one 16-bit RGB image per batch item:
/// `clamp((x + 1) / 2, 0, 1)`, ×65535, rounded.
pub fn to_rgb16<B: Backend>(images: Tensor<B, 4>) -> Vec<ImageBuffer<Rgb<u16>, Vec<u16>>> {
    to_rgb(images, |v| (v * 65535.0).round() as u16)
}

/// `clamp((x + 1) / 2, 0, 1)` per pixel, then `channel` to the image's channel type.
fn to_rgb<B: Backend, T>(
    images: Tensor<B, 4>,
    channel: impl Fn(f32) -> T,
) -> Vec<ImageBuffer<Rgb<T>, Vec<T>>>
where
    Rgb<T>: image::Pixel<Subpixel = T>,
{
    let [b, _, h, w] = images.dims();
    // [B, 3, H, W] → [B, H, W, 3] so that each image's values are contiguous.
    let pixels = images
        .add_scalar(1.0)
        .div_scalar(2.0)
        .clamp(0.0, 1.0)
        .permute([0, 2, 3, 1]);
    let values: Vec<f32> = pixels
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    values
        .chunks_exact(h * w * 3)
        .take(b)
        .map(|img| {
            let data = img.iter().map(|&v| channel(v)).collect();
            ImageBuffer::from_raw(w as u32, h as u32, data).unwrap_or_default()
        })
        .collect()
}

/// RGB images → encoder input `[B, 3, H', W']` in [−1, 1]. Sides that are not multiples of 8 are
/// centre-cropped to them, as ComfyUI's `vae_encode_crop_pixels` does (offset `(side % 8) / 2`).
/// All images must have the same size.
pub fn image_to_tensor<B: Backend>(
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>, VaeError> {
    let first = images.first().ok_or_else(|| VaeError::Size {
        width: 0,
        height: 0,
        reason: "no image given".into(),
    })?;
    let (w, h) = (first.width() as usize, first.height() as usize);
    let (cw, ch) = (w / 8 * 8, h / 8 * 8);
    if cw == 0 || ch == 0 {
        return Err(VaeError::Size {
            width: w,
            height: h,
            reason: "smaller than 8 pixels".into(),
        });
    }
    if let Some(other) = images.iter().find(|i| i.dimensions() != first.dimensions()) {
        return Err(VaeError::Size {
            width: other.width() as usize,
            height: other.height() as usize,
            reason: format!("a batch needs equal sizes; the first image is {w}×{h}"),
        });
    }
    let (x0, y0) = ((w % 8) / 2, (h % 8) / 2);
    let mut values = Vec::with_capacity(images.len() * 3 * ch * cw);
    for img in images {
        for c in 0..3 {
            for y in y0..y0 + ch {
                for x in x0..x0 + cw {
                    let v = f32::from(img.get_pixel(x as u32, y as u32).0[c]) / 255.0;
                    values.push(v * 2.0 - 1.0);
                }
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [images.len(), 3, ch, cw]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn comfyui_rounding_truncates() {
        // x = 0.5 → 0.75 → 191.25 → 191; x = −1 → 0; x = 1 and beyond → 255; 0.00392 → 127.99 → 127.
        let x = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 1.0, 7.0, -3.0, 0.003_92], [1, 3, 1, 2]),
            &Default::default(),
        );
        let imgs = to_rgb8(x);
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].dimensions(), (2, 1));
        // Channel-major input: R = (0.5, −1), G = (1, 7), B = (−3, 0.00392).
        assert_eq!(imgs[0].get_pixel(0, 0).0, [191, 255, 0]);
        assert_eq!(imgs[0].get_pixel(1, 0).0, [0, 255, 127]);
    }

    #[test]
    fn centre_crop_to_multiples_of_eight() {
        let img = RgbImage::from_fn(21, 10, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 255]));
        let t: Tensor<Flex, 4> = image_to_tensor(&[img], &Default::default()).unwrap();
        assert_eq!(t.dims(), [1, 3, 8, 16]);
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        // Offsets (21 % 8) / 2 = 2 and (10 % 8) / 2 = 1: the first pixel is source (2, 1).
        assert!((v[0] - (20.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);
        assert!((v[8 * 16] - (20.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);
        assert_eq!(v[2 * 8 * 16], 1.0);
    }

    #[test]
    fn bad_batches_are_errors() {
        let small = RgbImage::new(7, 20);
        assert!(matches!(
            image_to_tensor::<Flex>(&[small], &Default::default()),
            Err(VaeError::Size { width: 7, .. })
        ));
        assert!(matches!(
            image_to_tensor::<Flex>(&[], &Default::default()),
            Err(VaeError::Size { .. })
        ));
        let (a, b) = (RgbImage::new(16, 16), RgbImage::new(16, 24));
        assert!(matches!(
            image_to_tensor::<Flex>(&[a, b], &Default::default()),
            Err(VaeError::Size { height: 24, .. })
        ));
    }
}
