"""End-to-end reference for `sakiko-pipeline` / `sakiko generate`: tiny random models in the ComfyUI
file layouts, and text → image with ComfyUI's semantics, step by step:

- text: the Sakiko prefix + one space + prompt (negative: as given, no prefix), SentencePiece ids with
  BOS and no EOS, Gemma-2 without softcapping or sliding window (ComfyUI), `hidden_states[-2]`;
- noise: `torch.randn` on the CPU with the seed; σ from `linear_quadratic` (shift 6 model sampling);
- model: NextDiT (diffusers) called with t = 1 − σ, output negated, x0 = x − σ·out; cond and uncond in
  separate passes (their lengths differ), CFG on x0; `euler` / `euler_ancestral` (ancestral noise from a
  CPU generator seeded with the seed) from `sampling.py`;
- image: latent / 0.3611 + 0.1159, VAE decode in f32, clamp((x + 1) / 2) · 255 truncated to 8 bits;
- img2img: the init image → [−1, 1], VAE encode (mean), (z − 0.1159) · 0.3611, σ schedule trimmed by
  `denoise`, x = σ0·noise + (1 − σ0)·latent.

Files (a ComfyUI `models/` folder): `diffusion_models/tiny_lumina_bf16.safetensors` (original names,
`model.diffusion_model.` prefix, bf16), `text_encoders/tiny_gemma2_fp16.safetensors` (HF names under
`model.`, fp16, the SentencePiece model as the U8 tensor `spiece_model`), `vae/tiny_ae.safetensors`
(BFL names, bf16); plus the text encoder's and VAE's `config.json` (their tiny widths cannot be
detected from shapes), the denoiser's `config.json` (for the diffusers-folder and --dit-config
paths; its shapes are detectable), the init image, and `expected.safetensors`.

    .venv-ref/bin/python tools/reference/pipeline.py   # writes crates/pipeline/tests/fixtures/e2e/
"""

import json
import os
import sys

import diffusers
import numpy as np
import sentencepiece as spm
import torch
import transformers
from diffusers import AutoencoderKL, Lumina2Transformer2DModel
from PIL import Image
from safetensors.torch import save_file
from transformers import Gemma2Config, Gemma2Model

sys.path.insert(0, os.path.dirname(__file__))
import sampling as S  # noqa: E402
from nextdit import to_original  # noqa: E402
from vae import CONFIG as VAE_CONFIG, to_bfl  # noqa: E402

HERE = os.path.dirname(__file__)
OUT = os.path.join(HERE, "..", "..", "crates", "pipeline", "tests", "fixtures", "e2e")
SPM = os.path.join(HERE, "..", "..", "crates", "gemma", "tests", "fixtures", "tokenizer", "tiny_bpe.model")
PREFIX = "You are an assistant designed to generate anime images based on textual prompts. <Prompt Start>"
F32 = torch.float32

GEMMA = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=8,
             hidden_activation="gelu_pytorch_tanh", max_position_embeddings=512, pad_token_id=0, eos_token_id=1,
             bos_token_id=2, final_logit_softcapping=30.0, attn_logit_softcapping=None, sliding_window=4096)
# head_dim 12 = 3 × 4, so every width is detectable from the shapes (no config needed for the DiT).
DIT = dict(sample_size=16, patch_size=2, in_channels=16, hidden_size=36, num_layers=2, num_refiner_layers=1,
           num_attention_heads=3, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
           scaling_factor=1.0, axes_dim_rope=[4, 4, 4], axes_lens=[300, 512, 512], cap_feat_dim=32)

CASES = {
    "euler": dict(prompt="<tags>\n<special>1girl</special>\n<general>blue hair, smile</general>\n</tags>",
                  negative="", seed=42, steps=6, cfg=4.5, sampler="euler", batch=1, width=64, height=48),
    "ancestral": dict(prompt="a girl with blue hair under cherry blossoms", negative="lowres, bad anatomy",
                      seed=7, steps=5, cfg=4.0, sampler="euler_ancestral", batch=2, width=48, height=64),
    "img2img": dict(prompt="1girl, smile", negative="", seed=3, steps=5, cfg=3.0, sampler="euler", batch=1,
                    width=64, height=48, denoise=0.6),
}


def perturb(model, gen, rounding, norm_one):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_((1.0 if norm_one else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            p.copy_(p.to(rounding).to(F32))


def models():
    """The three tiny models (deterministic: the same weights every call) and the tokenizer."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    gemma = Gemma2Model(Gemma2Config(**GEMMA, attn_implementation="eager")).eval()
    perturb(gemma, gen, torch.float16, norm_one=False)  # Gemma norms are (1 + w)
    dit = Lumina2Transformer2DModel(**DIT).eval()
    perturb(dit, gen, torch.bfloat16, norm_one=True)
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    perturb(vae, gen, torch.bfloat16, norm_one=True)
    return gemma, dit, vae, spm.SentencePieceProcessor(model_file=SPM)


def encode_text(gemma, sp, text):
    """SentencePiece ids with BOS, and Gemma's hidden_states[-2]."""
    ids = [2] + sp.encode(text)
    with torch.no_grad():
        h = gemma(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    return ids, h


def x0(dit, x, sigma, cap):
    """ComfyUI's Lumina2 wrapper: t = 1 − σ, output negated, x0 = x − σ·out."""
    t = torch.full([x.shape[0]], 1.0, dtype=F32) - sigma
    capb = cap.repeat(x.shape[0], 1, 1)
    mask = torch.ones(capb.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        out = -dit(x, t, capb, mask, return_dict=False)[0]
    return x - out * sigma


def cfg_x0(dit, x, sigma, cond, uncond, scale):
    """CFG on x0, cond and uncond in separate passes (their lengths differ)."""
    c_ = x0(dit, x, sigma, cond)
    u_ = x0(dit, x, sigma, uncond)
    return u_ + (c_ - u_) * scale


def run_case(name, c, gemma, dit, vae, sp, init):
    """One generation with ComfyUI's semantics; the expected tensors under `name/`."""
    def encode(text):
        return encode_text(gemma, sp, text)

    ms = S.FlowSampling(shift=6.0)
    expected = {}
    ids_p, cond = encode(f"{PREFIX} {c['prompt']}")
    ids_n, uncond = encode(c["negative"])
    b, h, w = c["batch"], c["height"] // 8, c["width"] // 8
    noise = torch.randn([b, 16, h, w], dtype=F32, generator=torch.Generator().manual_seed(c["seed"]))
    denoise = c.get("denoise", 1.0)
    sigmas = S.calculate_sigmas(ms, "linear_quadratic", c["steps"], denoise).to(F32)
    latent = torch.zeros_like(noise)
    if "denoise" in c:
        pixels = torch.from_numpy(init).to(F32).permute(2, 0, 1)[None] / 255.0 * 2 - 1
        with torch.no_grad():
            z = vae.encode(pixels).latent_dist.mode()
        latent = ((z - 0.1159) * 0.3611).repeat(b, 1, 1, 1)
        expected[f"{name}/init_latent"] = latent
    x = sigmas[0] * noise + (1 - sigmas[0]) * latent

    def model(x, sigma, i, capture):
        return cfg_x0(dit, x, sigma, cond, uncond, c["cfg"])

    anc = torch.Generator().manual_seed(c["seed"])
    states = S.run_sampler(c["sampler"], x, sigmas, model,
                           lambda like: torch.randn(like.shape, dtype=F32, generator=anc))
    final = states[-1] / (1 - sigmas[-1])
    with torch.no_grad():
        img = vae.decode(final / 0.3611 + 0.1159).sample
    img = torch.clamp((img + 1) / 2, 0, 1).permute(0, 2, 3, 1)
    expected[f"{name}/ids_positive"] = torch.tensor(ids_p, dtype=torch.int64)
    expected[f"{name}/ids_negative"] = torch.tensor(ids_n, dtype=torch.int64)
    expected[f"{name}/cond"] = cond
    expected[f"{name}/sigmas"] = sigmas
    expected[f"{name}/noise"] = noise
    expected[f"{name}/latent"] = final
    expected[f"{name}/image"] = (img * 255).clamp(0, 255).to(torch.uint8)
    return expected


def main():
    torch.set_num_threads(1)
    models_dir = os.path.join(OUT, "models")
    for sub in ("diffusion_models", "text_encoders", "vae"):
        os.makedirs(os.path.join(models_dir, sub), exist_ok=True)
    gemma, dit, vae, sp = models()

    # Text encoder (ComfyUI fp16 layout + embedded SentencePiece model).
    with open(SPM, "rb") as f:
        proto = f.read()
    te = {"model." + k: v.to(torch.float16).contiguous() for k, v in gemma.state_dict().items()}
    te["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(te, os.path.join(models_dir, "text_encoders", "tiny_gemma2_fp16.safetensors"))
    with open(os.path.join(OUT, "text_encoder_config.json"), "w") as f:
        json.dump({"model_type": "gemma2", **GEMMA}, f, indent=2)

    # Denoiser (original names, all-in-one prefix, bf16).
    sd = {k: v.contiguous() for k, v in dit.state_dict().items()}
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous() for k, v in to_original(sd, DIT).items()},
              os.path.join(models_dir, "diffusion_models", "tiny_lumina_bf16.safetensors"))
    with open(os.path.join(OUT, "dit_config.json"), "w") as f:
        json.dump({"_class_name": "Lumina2Transformer2DModel", "_diffusers_version": diffusers.__version__, **DIT}, f, indent=2)

    # VAE (BFL names, bf16).
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in to_bfl(vae.state_dict()).items()},
              os.path.join(models_dir, "vae", "tiny_ae.safetensors"))
    with open(os.path.join(OUT, "vae_config.json"), "w") as f:
        json.dump({"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **VAE_CONFIG}, f, indent=2)

    # The init image for img2img: smooth colours, 64×48.
    yy, xx = np.mgrid[0:48, 0:64]
    init = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(init).save(os.path.join(OUT, "init.png"))

    expected = {}
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    for name, c in CASES.items():
        expected.update(run_case(name, c, gemma, dit, vae, sp, init))
        meta[name] = json.dumps(c)
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"), metadata=meta)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total} bytes")


if __name__ == "__main__":
    main()
