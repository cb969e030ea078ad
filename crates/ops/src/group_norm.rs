//! GroupNorm (optionally followed by SiLU) and nearest-neighbour upsampling, for the VAE.

use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{FloatDType, Tensor, backend::Backend};

/// `norm(x)`, then `silu` if `then_silu`: the norm computed in f32 (its parameters stay f32) and
/// returned in `x`'s dtype, as half precision loses too much in the variance of wide activations.
/// One fused pass on Flex in f32.
///
/// # Shapes
/// `x`: `[B, C, H, W]`, returned.
pub fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    then_silu: bool,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if crate::flex::fast::<B>(x.dtype())
        && norm.affine
        && norm.num_channels == x.dims()[1]
        && norm.num_groups > 0
        && norm.num_channels.is_multiple_of(norm.num_groups)
    {
        return crate::flex::group_norm(norm, x, then_silu);
    }
    group_norm_generic(norm, x, then_silu)
}

/// [`group_norm`] in Burn ops, for every backend.
pub(crate) fn group_norm_generic<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    then_silu: bool,
) -> Tensor<B, 4> {
    let dtype = x.dtype();
    let y = norm
        .forward(x.cast(FloatDType::F32))
        .cast(FloatDType::from(dtype));
    if then_silu { silu(y) } else { y }
}

/// Nearest-neighbour ×2 (each pixel repeated into a 2×2 block), exactly
/// `F.interpolate(mode="nearest", scale_factor=2)`; one pass on Flex.
///
/// # Shapes
/// `x`: `[B, C, H, W]` → `[B, C, 2H, 2W]`.
pub fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if crate::flex::fast::<B>(x.dtype()) {
        return crate::flex::upsample_nearest2x(x);
    }
    upsample_nearest2x_generic(x)
}

/// [`upsample_nearest2x`] in Burn ops, for every backend.
pub(crate) fn upsample_nearest2x_generic<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let x: Tensor<B, 6> = x.reshape([b, c, h, 1, w, 1]);
    x.repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([b, c, 2 * h, 2 * w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_upsampling_repeats_pixels() {
        use burn::backend::Flex;
        use burn::tensor::TensorData;
        let x = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
            &Default::default(),
        );
        let y = upsample_nearest2x(x);
        assert_eq!(y.dims(), [1, 1, 4, 4]);
        assert_eq!(
            y.into_data().to_vec::<f32>().unwrap(),
            [
                1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0
            ]
        );
    }
}
