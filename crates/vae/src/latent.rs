//! The one place where latents move between model space and VAE space.

use burn::tensor::{Tensor, backend::Backend};

/// Scale and shift between the denoiser's latent space and the VAE's (ComfyUI's `latent_formats.Flux`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentFormat {
    /// FLUX: 0.3611.
    pub scale: f32,
    /// FLUX: 0.1159.
    pub shift: f32,
}

impl LatentFormat {
    /// The FLUX format that Lumina 2 uses.
    pub const FLUX: LatentFormat = LatentFormat {
        scale: 0.3611,
        shift: 0.1159,
    };

    /// Model space → VAE space, before decoding: `z / scale + shift` (a division, as ComfyUI's
    /// `process_out`; multiplying by the reciprocal rounds differently).
    pub fn to_vae<B: Backend, const D: usize>(&self, z: Tensor<B, D>) -> Tensor<B, D> {
        z.div_scalar(self.scale).add_scalar(self.shift)
    }

    /// VAE space → model space, after encoding: `(z − shift) · scale` (ComfyUI's `process_in`).
    pub fn to_model<B: Backend, const D: usize>(&self, z: Tensor<B, D>) -> Tensor<B, D> {
        z.sub_scalar(self.shift).mul_scalar(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn round_trip_and_values() {
        let f = LatentFormat::FLUX;
        let z = Tensor::<Flex, 1>::from_data(
            TensorData::new(vec![0.0f32, 0.3611, -1.0], [3]),
            &Default::default(),
        );
        let vae: Vec<f32> = f.to_vae(z.clone()).into_data().to_vec().unwrap();
        assert!((vae[0] - 0.1159).abs() < 1e-7 && (vae[1] - 1.1159).abs() < 1e-6);
        assert!((vae[2] - (-1.0 / 0.3611 + 0.1159)).abs() < 1e-6);
        let back: Vec<f32> = f.to_model(f.to_vae(z)).into_data().to_vec().unwrap();
        for (a, b) in back.iter().zip([0.0, 0.3611, -1.0]) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
