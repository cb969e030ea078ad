"""PyTorch side of `sakiko bench`: the same stage, preset and size, timed the same way (warm-up
runs, then the median of timed runs), printed as one JSON object like `sakiko bench --json`.

- denoise: one CFG step of diffusers' `Lumina2Transformer2DModel` as diffusers' pipeline runs
  it (prompt and negative in one batch of 2, captions padded to the longer and masked; SDPA);
- decode: one `AutoencoderKL` decode (FLUX layout) of the latent for width×height;
- encode: one transformers `Gemma2Model` forward (eager attention, no softcap, as ComfyUI)
  with hidden states.

Weights are PyTorch's random initialisation (speed does not depend on the values).

    .venv-ref/bin/python tools/reference/stage_bench.py --stage denoise --preset mid --width 512 --height 512
    # on a GPU: --device cuda --dtype bf16
"""

import argparse
import json
import statistics
import time

import torch

DIT_BASE = dict(sample_size=128, patch_size=2, in_channels=16, multiple_of=256, ffn_dim_multiplier=None,
                norm_eps=1e-5, scaling_factor=1.0, axes_lens=[300, 512, 512])
DIT = {
    "tiny": dict(DIT_BASE, hidden_size=64, num_layers=2, num_refiner_layers=1, num_attention_heads=4,
                 num_kv_heads=2, axes_dim_rope=[8, 4, 4], cap_feat_dim=64),
    "mid": dict(DIT_BASE, hidden_size=768, num_layers=4, num_refiner_layers=2, num_attention_heads=12,
                num_kv_heads=4, axes_dim_rope=[24, 20, 20], cap_feat_dim=768),
    "2b": dict(DIT_BASE, hidden_size=2304, num_layers=26, num_refiner_layers=2, num_attention_heads=24,
               num_kv_heads=8, axes_dim_rope=[32, 32, 32], cap_feat_dim=2304),
}
VAE_BASE = dict(in_channels=3, out_channels=3, latent_channels=16, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32, act_fn="silu", sample_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
                mid_block_add_attention=True)
VAE = {
    "tiny": dict(VAE_BASE, block_out_channels=[32, 32, 64, 64], layers_per_block=1),
    "mid": dict(VAE_BASE, block_out_channels=[32, 64, 128, 128], layers_per_block=2),
    "2b": dict(VAE_BASE, block_out_channels=[128, 256, 512, 512], layers_per_block=2),
}
GEMMA_BASE = dict(rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
                  attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=4096)
GEMMA = {
    "tiny": dict(GEMMA_BASE, vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16),
    "mid": dict(GEMMA_BASE, vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                num_attention_heads=8, num_key_value_heads=4, head_dim=96, query_pre_attn_scalar=96),
    "2b": dict(GEMMA_BASE, vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stage", choices=["denoise", "decode", "encode"], default="denoise")
    p.add_argument("--preset", choices=list(DIT), default="2b")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--prompt-tokens", type=int, default=96)
    p.add_argument("--negative-tokens", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="f32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev, dt = torch.device(a.device), DTYPES[a.dtype]
    lat = (a.height // 8, a.width // 8)
    # Parameters are made on the device itself: initialising 2.6 B of them on the host first
    # takes longer than the whole GPU benchmark.
    with dev:
        if a.stage == "denoise":
            from diffusers import Lumina2Transformer2DModel
            cfg = DIT[a.preset]
            model = Lumina2Transformer2DModel(**cfg).eval().to(dev, dt)
            lens = (a.prompt_tokens, a.negative_tokens)
            x = torch.randn(2, 16, *lat, device=dev, dtype=dt)
            t = torch.tensor([0.5, 0.5], device=dev, dtype=dt)
            cap = torch.randn(2, max(lens), cfg["cap_feat_dim"], device=dev, dtype=dt)
            mask = torch.zeros(2, max(lens), dtype=torch.bool, device=dev)
            for i, n in enumerate(lens):
                mask[i, :n] = True
            step = lambda: model(x, t, cap, mask)  # noqa: E731
        elif a.stage == "decode":
            from diffusers import AutoencoderKL
            model = AutoencoderKL(**VAE[a.preset]).eval().to(dev, dt)
            z = torch.randn(1, 16, *lat, device=dev, dtype=dt)
            step = lambda: model.decode(z)  # noqa: E731
        else:
            from transformers import Gemma2Config, Gemma2Model
            cfg = GEMMA[a.preset]
            model = Gemma2Model(Gemma2Config(**cfg, attn_implementation="eager")).eval().to(dev, dt)
            ids = torch.randint(3, cfg["vocab_size"], (1, a.prompt_tokens), device=dev)
            step = lambda: model(ids, output_hidden_states=True)  # noqa: E731

    def run():
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        first = None
        for _ in range(a.warmup):
            s = time.perf_counter()
            run()
            first = first if first is not None else time.perf_counter() - s
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.runs):
            s = time.perf_counter()
            run()
            times.append(time.perf_counter() - s)
    out = dict(stage=a.stage, backend=f"pytorch {torch.__version__} {a.device}", dtype=a.dtype, preset=a.preset,
               width=a.width, height=a.height, prompt_tokens=a.prompt_tokens, negative_tokens=a.negative_tokens,
               runs=a.runs, median_s=statistics.median(times), min_s=min(times), max_s=max(times), times_s=times,
               first_run_s=first, threads=torch.get_num_threads())
    if dev.type == "cuda":
        out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
