"""Reference fixtures for `sakiko-nextdit`: diffusers' `Lumina2Transformer2DModel` at two tiny configs
(diffusers' own model-test config, and a 16-channel GQA config), weights perturbed and rounded to bf16
precision, saved in diffusers naming (f32) and in the original / ComfyUI naming (fused qkv,
`model.diffusion_model.` prefix, bf16, with the unused `norm_final.weight`), with inputs, outputs and
per-block intermediates for several cases, and the equal-caption case in bf16 and f16.

    .venv-ref/bin/python tools/reference/nextdit.py   # writes crates/nextdit/tests/fixtures/
"""

import copy
import json
import os

import diffusers
import torch
from diffusers import Lumina2Transformer2DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "nextdit", "tests", "fixtures")
CONFIGS = {
    "test": dict(sample_size=16, patch_size=2, in_channels=4, hidden_size=24, num_layers=2, num_refiner_layers=1,
                 num_attention_heads=3, num_kv_heads=1, multiple_of=2, ffn_dim_multiplier=None, norm_eps=1e-5,
                 scaling_factor=1.0, axes_dim_rope=[4, 2, 2], axes_lens=[128, 128, 128], cap_feat_dim=32),
    "gqa16": dict(sample_size=16, patch_size=2, in_channels=16, hidden_size=32, num_layers=2, num_refiner_layers=2,
                  num_attention_heads=4, num_kv_heads=2, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
                  scaling_factor=1.0, axes_dim_rope=[4, 2, 2], axes_lens=[300, 512, 512], cap_feat_dim=32),
}


def to_original(sd, cfg):
    """diffusers → original names (the reverse of convert_lumina2_to_diffusers, with the general qkv)."""
    out = {}
    for k, v in sd.items():
        if ".attn.to_k." in k or ".attn.to_v." in k:
            continue
        o = k
        if ".attn.to_q." in k:
            base = k.split(".attn.to_q.")[0]
            out[f"{base}.attention.qkv.weight"] = torch.cat(
                [sd[f"{base}.attn.to_q.weight"], sd[f"{base}.attn.to_k.weight"], sd[f"{base}.attn.to_v.weight"]])
            continue
        for d, g in (("time_caption_embed.caption_embedder", "cap_embedder"),
                     ("time_caption_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                     ("time_caption_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                     ("norm_out.linear_1", "final_layer.adaLN_modulation.1"),
                     ("norm_out.linear_2", "final_layer.linear"),
                     (".attn.to_out.0.", ".attention.out."), (".attn.norm_q.", ".attention.q_norm."),
                     (".attn.norm_k.", ".attention.k_norm."), (".feed_forward.linear_1.", ".feed_forward.w1."),
                     (".feed_forward.linear_2.", ".feed_forward.w2."), (".feed_forward.linear_3.", ".feed_forward.w3."),
                     (".norm1.linear.", ".adaLN_modulation.1."), (".norm1.norm.", ".attention_norm1."),
                     (".norm2.", ".attention_norm2.")):
            o = o.replace(d, g)
        if o.startswith("context_refiner.") and ".norm1." in o:
            o = o.replace(".norm1.", ".attention_norm1.")
        out[o] = v
    out["norm_final.weight"] = torch.ones(cfg["hidden_size"])
    return out


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        model = Lumina2Transformer2DModel(**cfg).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname and p.ndim == 1:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        d = os.path.join(OUT, f"{name}_diffusers")
        os.makedirs(d, exist_ok=True)
        save_file(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"_class_name": "Lumina2Transformer2DModel", "_diffusers_version": diffusers.__version__, **cfg}, f, indent=2)
        orig = {"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous() for k, v in to_original(sd, cfg).items()}
        save_file(orig, os.path.join(OUT, f"{name}_original_bf16.safetensors"))

        C, L, F = cfg["in_channels"], 12, cfg["cap_feat_dim"]
        io = {}
        cases = {
            "equal": (torch.randn(2, C, 8, 8, generator=gen), torch.rand(2, generator=gen), [L, L]),
            "ragged": (torch.randn(2, C, 8, 8, generator=gen), torch.rand(2, generator=gen), [L, 5]),
            "nonsquare": (torch.randn(1, C, 12, 6, generator=gen), torch.rand(1, generator=gen), [7]),
            "times": (torch.randn(3, C, 4, 4, generator=gen), torch.tensor([0.0, 0.5, 1.0]), [L, L, L]),
        }
        hooks, inter = [], {}
        for mod_name in ["x_embedder"] + [f"context_refiner.{i}" for i in range(cfg["num_refiner_layers"])] + \
                [f"noise_refiner.{i}" for i in range(cfg["num_refiner_layers"])] + [f"layers.{i}" for i in range(cfg["num_layers"])]:
            mod = model.get_submodule(mod_name)
            hooks.append(mod.register_forward_hook(lambda m, a, o, n=mod_name: inter.__setitem__(n, o)))
        for case, (x, t, lens) in cases.items():
            b = x.shape[0]
            cap = torch.randn(b, L, F, generator=gen)
            mask = torch.zeros(b, L, dtype=torch.bool)
            for i, n in enumerate(lens):
                mask[i, :n] = True
            inter.clear()
            with torch.no_grad():
                out = model(x, t, cap, mask, return_dict=False)[0]
            io[f"{case}/x"], io[f"{case}/t"], io[f"{case}/cap"] = x, t.to(torch.float32), cap
            io[f"{case}/cap_lens"] = torch.tensor(lens, dtype=torch.int64)
            io[f"{case}/out"] = out
            if case == "equal":
                for k, v in inter.items():
                    io[f"{case}/block/{k}"] = v
                # The same forward in half precision, as PyTorch computes it: the yardstick for
                # our bf16 / f16 compute (whose error against f32 should be of the same size).
                for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
                    half = copy.deepcopy(model).to(dtype)
                    with torch.no_grad():
                        io[f"{case}/out_{tag}"] = half(x.to(dtype), t, cap.to(dtype), mask,
                                                       return_dict=False)[0].to(torch.float32)
        for h in hooks:
            h.remove()
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, f"{name}_io.safetensors"),
                  metadata={"torch": torch.__version__, "diffusers": diffusers.__version__})
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total} bytes")


if __name__ == "__main__":
    main()
