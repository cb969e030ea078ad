"""Reference fixtures for `sakiko-vae`: a tiny FLUX-layout AutoencoderKL (diffusers), weights perturbed
and rounded to bf16 precision (so f32 and bf16 files hold identical values), saved in diffusers naming
(f32 folder) and in BFL/ComfyUI naming (`ae.safetensors` layout, bf16, `vae.` prefix), with decode and
encode outputs computed in f32.

    .venv-ref/bin/python tools/reference/vae.py   # writes crates/vae/tests/fixtures/
"""

import copy
import json
import os

import diffusers
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "vae", "tests", "fixtures")
CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 16, 16, 16], layers_per_block=2, norm_num_groups=4, act_fn="silu",
    sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, force_upcast=True,
)


def to_bfl(sd, n_up=4):
    """diffusers → BFL names (the reverse of convert_ldm_vae_checkpoint)."""
    out = {}
    for k, v in sd.items():
        b = k
        for side in ("encoder", "decoder"):
            b = b.replace(f"{side}.conv_norm_out.", f"{side}.norm_out.")
            b = b.replace(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.")
            b = b.replace(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.")
            b = b.replace(f"{side}.mid_block.attentions.0.group_norm.", f"{side}.mid.attn_1.norm.")
            for d, o in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                b = b.replace(f"{side}.mid_block.attentions.0.{d}.", f"{side}.mid.attn_1.{o}.")
        b = b.replace("conv_shortcut", "nin_shortcut")
        if b.startswith("encoder.down_blocks."):
            parts = b.split(".")
            i = parts[2]
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("downsamplers.0.conv", "downsample.conv")
            b = f"encoder.down.{i}.{rest}"
        if b.startswith("decoder.up_blocks."):
            parts = b.split(".")
            i = n_up - 1 - int(parts[2])
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("upsamplers.0.conv", "upsample.conv")
            b = f"decoder.up.{i}.{rest}"
        if ".mid.attn_1." in b and b.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out[b] = v
    return out


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    vae = AutoencoderKL(**CONFIG).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))  # exactly representable in bf16
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    os.makedirs(os.path.join(OUT, "diffusers"), exist_ok=True)
    save_file(sd, os.path.join(OUT, "diffusers", "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(OUT, "diffusers", "config.json"), "w") as f:
        json.dump({"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **CONFIG}, f, indent=2)
    bfl = {"vae." + k: v.to(torch.bfloat16).contiguous() for k, v in to_bfl(sd).items()}
    save_file(bfl, os.path.join(OUT, "ae_bf16_prefixed.safetensors"))

    io = {}
    with torch.no_grad():
        z = torch.randn(2, 16, 4, 6, generator=gen)              # VAE-space latents, non-square
        io["decode/z"] = z
        io["decode/image"] = vae.decode(z).sample                # [2, 3, 32, 48]
        img = torch.rand(1, 3, 40, 32, generator=gen) * 2 - 1
        io["encode/image"] = img
        io["encode/mean"] = vae.encode(img).latent_dist.mode()   # [1, 16, 5, 4]
        # diffusers' own half-precision runs: the error our bf16 / f16 paths are held to.
        for tag, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
            half = copy.deepcopy(vae).to(dtype)
            io[f"decode/image_{tag}"] = half.decode(z.to(dtype)).sample.float()
            io[f"encode/mean_{tag}"] = half.encode(img.to(dtype)).latent_dist.mode().float()
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"),
              metadata={"torch": torch.__version__, "diffusers": diffusers.__version__})
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {len(sd)} tensors ({sum(v.numel() for v in sd.values())} parameters), fixtures {total} bytes")


if __name__ == "__main__":
    main()
