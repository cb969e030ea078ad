//! A rough estimate of the memory a request needs, per stage.

use sakiko_gemma::Gemma2Config;
use sakiko_nextdit::NextDitConfig;
use sakiko_vae::VaeConfig;

use crate::GenerationRequest;

/// Estimated bytes per stage (weights in their compute dtype plus the largest live activations) and the peak:
/// the largest stage when components are freed between stages, their weights' sum plus the
/// largest activations when they are kept. An order-of-magnitude guide for choosing sizes and
/// batch counts, not a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Text encoding.
    pub text_encoder: u64,
    /// Sampling.
    pub dit: u64,
    /// Decoding.
    pub vae: u64,
    /// The expected peak.
    pub peak: u64,
}

impl MemoryEstimate {
    /// The estimate for `request` with these models (`params`: stored parameter counts of the
    /// denoiser and VAE; `q8_0_params`: the denoiser's parameters kept quantised as Q8_0, 32
    /// int8 values and an f32 scale per block, 36 bytes per 32; `bytes`: bytes per value of the
    /// text encoder, the denoiser and the VAE, 4 for f32, 2 for bf16/f16; all other weights are
    /// dequantised to these at load, whatever the file stores).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        te: &Gemma2Config,
        dit: &NextDitConfig,
        vae: &VaeConfig,
        params: [u64; 2],
        q8_0_params: u64,
        [te_bytes, dit_bytes, vae_bytes]: [u64; 3],
        request: &GenerationRequest,
        prompt_tokens: usize,
        keep_in_memory: bool,
    ) -> Self {
        let u = |v: usize| v as u64;
        // Gemma: the embedding stays in 16 bits on the host; layers in the compute dtype;
        // activations are small.
        let te_layer = u(te.hidden_size)
            * u(te.head_dim)
            * u(te.num_attention_heads + te.num_key_value_heads)
            * 2
            + 3 * u(te.hidden_size) * u(te.intermediate_size);
        let te_weights = u(te.vocab_size) * u(te.hidden_size) * 2
            + u(te.num_hidden_layers) * te_layer * te_bytes;
        let te_act = u(prompt_tokens) * u(te.hidden_size.max(te.intermediate_size)) * te_bytes * 8;

        // NextDiT: prompt and negative in one batch (CFG); per token a handful of hidden-wide
        // tensors and the SwiGLU intermediate, plus attention scores.
        let patch = u(dit.patch_size) * u(vae.downscale());
        let tokens = u(request.width) / patch * (u(request.height) / patch) + u(prompt_tokens);
        let rows = 2 * u(request.batch);
        let dit_act = rows * tokens * (12 * u(dit.hidden_size) + 3 * u(dit.ffn_dim())) * dit_bytes
            + rows * u(dit.num_attention_heads) * tokens * tokens * dit_bytes;
        let q8_0_params = q8_0_params.min(params[0]);
        let dit_weights = (params[0] - q8_0_params) * dit_bytes + q8_0_params * 36 / 32;

        // VAE: three full-resolution tensors of the widest full-resolution level, and the
        // single-head attention over the lowest level.
        let pixels = u(request.width) * u(request.height) * u(request.batch);
        let low = pixels / (u(vae.downscale()) * u(vae.downscale()));
        let vae_act =
            3 * pixels * u(vae.block_out_channels.first().copied().unwrap_or(128)) * vae_bytes
                + low * (low / u(request.batch).max(1)) * vae_bytes;
        let vae_weights = params[1] * vae_bytes;

        let stages = [
            te_weights + te_act,
            dit_weights + dit_act,
            vae_weights + vae_act,
        ];
        let peak = if keep_in_memory {
            te_weights + dit_weights + vae_weights + te_act.max(dit_act).max(vae_act)
        } else {
            stages.into_iter().max().unwrap_or(0)
        };
        Self {
            text_encoder: stages[0],
            dit: stages[1],
            vae: stages[2],
            peak,
        }
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "≈{:.2} GiB peak (text encoder {:.2}, denoiser {:.2}, VAE {:.2})",
            gib(self.peak),
            gib(self.text_encoder),
            gib(self.dit),
            gib(self.vae)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2B denoiser in bf16, all of it stored as dequantised bf16 or some of it kept as Q8_0.
    fn dit_stage(q8_0_params: u64) -> u64 {
        let dit = NextDitConfig::lumina2_2b();
        let params = dit
            .tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        let request = GenerationRequest::new("x").size(1024, 1024);
        let estimate = MemoryEstimate::new(
            &Gemma2Config::gemma_2_2b(),
            &dit,
            &VaeConfig::flux(),
            [params, 84_000_000],
            q8_0_params,
            [2, 2, 2],
            &request,
            96,
            false,
        );
        estimate.dit
    }

    #[test]
    fn q8_0_weights_count_36_bytes_per_32() {
        let (dense, kept) = (dit_stage(0), dit_stage(2_400_000_000));
        // 2.4 B weights at 1.125 instead of 2 bytes each.
        assert_eq!(dense - kept, 2_400_000_000 * 2 - 2_400_000_000 * 36 / 32);
        // More than the denoiser holds is capped at what it holds.
        assert!(dit_stage(u64::MAX) < kept);
    }
}
