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

    /// x0 for `x` whose rows use `caps` (each `[1, L, F]`, all of one length), repeated per row.
    fn run(
        &self,
        x: &Tensor<B, 4>,
        sigma: f32,
        caps: &[&Conditioning<B>],
    ) -> Result<Tensor<B, 4>, DenoiseError> {
        let rows = x.dims()[0] / caps.len();
        let features = Tensor::cat(
            caps.iter()
                .map(|c| c.features.clone().repeat_dim(0, rows))
                .collect(),
            0,
        );
        let b = rows * caps.len();
        let v = self.model.forward(
            x.clone(),
            &vec![1.0 - sigma; b],
            features,
            &vec![caps[0].len(); b],
        )?;
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

    /// One batched pass when both prompts have the same length (as ComfyUI batches equal
    /// shapes); otherwise two passes, so that no caption is ever padded or masked.
    fn denoise_pair(
        &mut self,
        x: &Tensor<B, 4>,
        sigma: f32,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), DenoiseError> {
        if self.positive.len() != self.negative.len() {
            return Ok((
                self.denoise(x, sigma, Cond::Positive)?,
                self.denoise(x, sigma, Cond::Negative)?,
            ));
        }
        let b = x.dims()[0];
        let both = Tensor::cat(vec![x.clone(), x.clone()], 0);
        let x0 = self.run(&both, sigma, &[&self.positive, &self.negative])?;
        Ok((x0.clone().narrow(0, 0, b), x0.narrow(0, b, b)))
    }
}
