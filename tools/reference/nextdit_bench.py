"""PyTorch side of `cargo bench -p sakiko-nextdit --bench denoise_step`: builds a tiny and a mid-size
NextDiT (diffusers `Lumina2Transformer2DModel`, random weights), saves them to target/nextdit-bench/,
and times one CFG denoise step (cond and uncond in one batch of 2, captions of 96 and 8 tokens,
64×64 latent = 1024 image tokens) on the CPU with 2 threads.

    .venv-ref/bin/python tools/reference/nextdit_bench.py
"""

import json
import os
import statistics
import time

import torch
from diffusers import Lumina2Transformer2DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "nextdit-bench")
BASE = dict(sample_size=64, patch_size=2, in_channels=16, multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5,
            scaling_factor=1.0, axes_lens=[300, 512, 512])
CONFIGS = {
    "tiny": dict(BASE, hidden_size=64, num_layers=2, num_refiner_layers=1, num_attention_heads=4, num_kv_heads=2,
                 axes_dim_rope=[8, 4, 4], cap_feat_dim=64),
    "mid": dict(BASE, hidden_size=768, num_layers=4, num_refiner_layers=2, num_attention_heads=12, num_kv_heads=4,
                axes_dim_rope=[24, 20, 20], cap_feat_dim=768),
}
CAPTIONS = (96, 8)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    for name, cfg in CONFIGS.items():
        model = Lumina2Transformer2DModel(**cfg).eval()
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "diffusion_pytorch_model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        x = torch.randn(2, 16, 64, 64)
        t = torch.tensor([0.3, 0.3])
        cap = torch.randn(2, max(CAPTIONS), cfg["cap_feat_dim"])
        mask = torch.zeros(2, max(CAPTIONS), dtype=torch.bool)
        for i, n in enumerate(CAPTIONS):
            mask[i, :n] = True
        times = []
        with torch.no_grad():
            model(x, t, cap, mask)
            for _ in range(5):
                start = time.perf_counter()
                model(x, t, cap, mask)
                times.append(time.perf_counter() - start)
        print(f"PyTorch {torch.__version__} {name}: CFG step (batch 2, captions {CAPTIONS}, 1024 image tokens), "
              f"2 threads: median {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
