//! NextDiT as a [`Denoiser`]: the one place where σ becomes the model's time and the model's
//! velocity becomes an x0 prediction.

use burn::tensor::{Tensor, backend::Backend};
use sakiko_nextdit::NextDit;
use sakiko_sampling::{Cond, DenoiseError, Denoiser, FlowSampling};

/// A prompt's conditioning: `[1, L, cap_feat_dim]`, every token valid.
#[derive(Debug, Clone)]
pub struct Conditioning<B: Backend> {
    /// Gemma's `hidden_states[-2]` for the prompt.
    pub features: Tensor<B, 3>,
}

impl<B: Backend> Conditioning<B> {
    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.features.dims()[1]
    }

    /// Whether there are no tokens (never the case for encoded prompts, which start with BOS).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// NextDiT with a positive and a negative conditioning, in the samplers' σ convention.
///
/// The model's own time runs the other way (`t = 1` clean) and it predicts `data − noise`, so a
/// call at σ runs the model at `t = 1 − σ` and turns its output `v` into
/// `x0 = x − σ·(−v)`, exactly as ComfyUI's `Lumina2` model wrapper does.
#[derive(Debug)]
pub struct LuminaDenoiser<'a, B: Backend> {
    model: &'a NextDit<B>,
    positive: Conditioning<B>,
    negative: Conditioning<B>,
}

impl<'a, B: Backend> LuminaDenoiser<'a, B> {
    /// Wraps `model` with both conditionings.
    pub fn new(
        model: &'a NextDit<B>,
        positive: Conditioning<B>,
        negative: Conditioning<B>,
    ) -> Self {
        Self {
            model,
            positive,
            negative,
        }
    }

    fn cond(&self, cond: Cond) -> &Conditioning<B> {
        match cond {
            Cond::Positive => &self.positive,
            Cond::Negative => &self.negative,
        }
    }

    /// x0 for `x` whose rows use `caps` (each `[1, L, F]`), repeated per row: the batch is
    /// `x.dims()[0] / caps.len()` rows per caption. Shorter captions are zero-padded to the longest
    /// and masked as keys, so every caption runs exactly as it would alone.
    fn run(
        &self,
        x: &Tensor<B, 4>,
        sigma: f32,
        caps: &[&Conditioning<B>],
    ) -> Result<Tensor<B, 4>, DenoiseError> {
        let rows = x.dims()[0] / caps.len();
        let longest = caps.iter().map(|c| c.len()).max().unwrap_or(0);
        let features = Tensor::cat(
            caps.iter()
                .map(|c| {
                    let [_, l, f] = c.features.dims();
                    let padded = if l < longest {
                        let pad = Tensor::zeros(
                            [1, longest - l, f],
                            (&c.features.device(), c.features.dtype()),
                        );
                        Tensor::cat(vec![c.features.clone(), pad], 1)
                    } else {
                        c.features.clone()
                    };
                    padded.repeat_dim(0, rows)
                })
                .collect(),
            0,
        );
        let lens: Vec<usize> = caps
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.len(), rows))
            .collect();
        let v = self
            .model
            .forward(x.clone(), &vec![1.0 - sigma; lens.len()], features, &lens)?;
        Ok(FlowSampling::denoised(sigma, v.neg(), x.clone()))
    }
}

impl<B: Backend> Denoiser<B> for LuminaDenoiser<'_, B> {
    fn denoise(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
        cond: Cond,
    ) -> Result<Tensor<B, 4>, DenoiseError> {
        self.run(x, sigma, &[self.cond(cond)])
    }

    /// One batched pass, as diffusers runs CFG: the shorter caption is padded and masked, which
    /// gives each half what its own pass would (ComfyUI runs two passes when the lengths differ;
    /// one pass streams the weights once per step, the larger cost on CPU).
    fn denoise_pair(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), DenoiseError> {
        let b = x.dims()[0];
        let both = Tensor::cat(vec![x.clone(), x.clone()], 0);
        let x0 = self.run(&both, sigma, &[&self.positive, &self.negative])?;
        Ok((x0.clone().narrow(0, 0, b), x0.narrow(0, b, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use sakiko_nextdit::NextDitConfig;

    fn caption(len: usize, dim: usize) -> Conditioning<Flex> {
        Conditioning {
            features: Tensor::random(
                [1, len, dim],
                Distribution::Normal(0.0, 1.0),
                &Default::default(),
            ),
        }
    }

    /// The padded, masked pair must give each caption what its own pass gives; passing the padded
    /// length as valid (no mask) fails this by ~1e-1.
    #[test]
    fn a_batched_pair_of_unequal_captions_matches_two_passes() {
        let config = NextDitConfig::tiny();
        let model = config.init::<Flex>(&Default::default());
        let x = Tensor::random(
            [1, config.in_channels, 8, 8],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let mut denoiser = LuminaDenoiser::new(
            &model,
            caption(7, config.cap_feat_dim),
            caption(3, config.cap_feat_dim),
        );
        let (pos, neg) = denoiser.denoise_pair(&x, 0.6).unwrap();
        let alone_pos = denoiser.denoise(&x, 0.6, Cond::Positive).unwrap();
        let alone_neg = denoiser.denoise(&x, 0.6, Cond::Negative).unwrap();
        for (pair, alone) in [(pos, alone_pos), (neg, alone_neg)] {
            let diff: f32 = (pair - alone.clone()).abs().max().into_scalar();
            let scale: f32 = alone.abs().max().into_scalar();
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "max |Δ| {diff} (scale {scale})"
            );
        }
    }
}
