"""Reference fixtures for `sakiko-gemma`'s encoder: a tiny random Gemma-2 (transformers, eager
attention), weights perturbed and rounded to fp16 precision, saved in the Hugging Face layout (f32
`model.safetensors` + `config.json`) and the ComfyUI layout (`model.` prefix, fp16), with every hidden
state for: one unpadded sequence, a right-padded batch with a mask; each with softcapping on or off
and with a sliding window smaller than the sequence or not.

    .venv-ref/bin/python tools/reference/gemma.py   # writes crates/gemma/tests/fixtures/
"""

import json
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import Gemma2Config, Gemma2Model

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "gemma", "tests", "fixtures")
BASE = dict(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=8,
            hidden_activation="gelu_pytorch_tanh", max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
            bos_token_id=2, final_logit_softcapping=30.0)
VARIANTS = {
    "plain": dict(attn_logit_softcapping=None, sliding_window=4096),
    "softcap": dict(attn_logit_softcapping=2.0, sliding_window=4096),
    "sliding": dict(attn_logit_softcapping=None, sliding_window=4),
    "both": dict(attn_logit_softcapping=2.0, sliding_window=4),
}


def model_for(variant, state):
    cfg = Gemma2Config(**BASE, **VARIANTS[variant], attn_implementation="eager")
    m = Gemma2Model(cfg).eval()
    m.load_state_dict(state)
    assert m.config._attn_implementation == "eager"
    return m, cfg


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    base, cfg = model_for("plain", Gemma2Model(Gemma2Config(**BASE, **VARIANTS["plain"])).state_dict())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "norm" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            p.copy_(p.to(torch.float16).to(torch.float32))
    state = {k: v.contiguous() for k, v in base.state_dict().items()}
    save_file(state, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump({k: v for k, v in cfg.to_dict().items() if k in BASE or k in VARIANTS["plain"] or k in ("model_type",)}, f, indent=2)
    save_file({"model." + k: v.to(torch.float16) for k, v in state.items()}, os.path.join(OUT, "comfyui_fp16.safetensors"))

    io = {}
    ids = torch.randint(3, BASE["vocab_size"], (2, 10), generator=gen)
    ids[:, 0] = 2  # BOS
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = 0  # right padding with <pad>
    io["ids"] = ids
    io["mask"] = mask
    for variant in VARIANTS:
        model, _ = model_for(variant, state)
        with torch.no_grad():
            single = model(ids[:1], output_hidden_states=True).hidden_states
            batch = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for j, h in enumerate(single):
            io[f"{variant}/single/hidden{j}"] = h
        for j, h in enumerate(batch):
            io[f"{variant}/batch/hidden{j}"] = h
    # transformers' own half-precision runs (weights and activations in the dtype, norms in f32),
    # the error our bf16 / f16 paths are held to.
    for variant in ("plain", "both"):
        for name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
            model, _ = model_for(variant, state)
            model = model.to(dtype)
            with torch.no_grad():
                batch = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for j, h in enumerate(batch):
                io[f"{variant}/{name}/batch/hidden{j}"] = h.to(torch.float32)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__})
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures: {total} bytes")


if __name__ == "__main__":
    main()
