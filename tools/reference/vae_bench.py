"""PyTorch side of the VAE decode benchmark: builds a mid-size FLUX-layout AutoencoderKL with random
weights, saves it where `cargo bench -p sakiko-vae --bench decode` loads it, and times the same decode
on the same machine (CPU, f32, 2 threads).

    .venv-ref/bin/python tools/reference/vae_bench.py    # writes target/vae-bench/, prints timings
"""

import json
import os
import statistics
import time

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "vae-bench")
CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 64, 128, 128], layers_per_block=2, norm_num_groups=32, act_fn="silu",
    sample_size=256, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
)
LATENT = (1, 16, 32, 32)  # a 256×256 image


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    vae = AutoencoderKL(**CONFIG).eval()
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, os.path.join(OUT, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    z = torch.randn(LATENT)
    times = []
    with torch.no_grad():
        vae.decode(z)
        for _ in range(10):
            t = time.perf_counter()
            vae.decode(z)
            times.append(time.perf_counter() - t)
    print(f"PyTorch {torch.__version__} decode {LATENT} → 256×256, 2 threads: "
          f"median {statistics.median(times) * 1000:.1f} ms (min {min(times) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
