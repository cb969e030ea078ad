//! Inputs shared by the test binaries: the same deterministic values on every backend (no
//! backend RNG).

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Pseudo-random values in [-2, 2).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// A tensor of [`values`].
pub fn tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u32,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(values(shape.iter().product(), seed), shape),
        device,
    )
}
