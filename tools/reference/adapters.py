"""Reference fixtures for `sakiko-adapters`: adapters written by the trainers' own libraries on the tiny
NextDiT (16-channel GQA config, original / ComfyUI names and diffusers names) and the tiny Gemma-2 of
the other fixtures, and the weights each library itself computes for them.

- LyCORIS (`lycoris-lora`): LoCon (kohya `lora_up` / `lora_down` / `alpha`), LoKr, LoHa, DoRA and full
  diffs, under kohya names (`lora_unet_…`, `lora_te_…`: LyCORIS's kohya wrapper names modules the same
  way, with another prefix) and LyCORIS's standalone names on diffusers modules (`lycoris_layers_0_attn_to_q`).
  Expected weights are what the patched layer computes in LyCORIS's own forward (the layer applied to
  the identity), i.e. the weight the adapter was trained with; LyCORIS's `merge_to` applies LoKr and
  LoHa scales twice and is not used.
- PEFT: LoRA and DoRA on diffusers modules, saved by diffusers' `Lumina2Pipeline.save_lora_weights`
  (`transformer.` keys, `lora_alpha` in the metadata); LoRA on original modules with ComfyUI's
  `diffusion_model.` prefix. Expected weights from `merge_and_unload`.

Adapter parameters are random (every factor, including those the libraries initialise to zero), and
alpha differs from the rank, so a missing or doubled scale shows. Strengths other than 1 use the
libraries' multipliers (LyCORIS `set_multiplier`) and, for DoRA, ComfyUI's blend W + s·(W' − W).

Run: .venv-ref/bin/python tools/reference/adapters.py
"""

import importlib.metadata
import json
import os
import re
import tempfile

import diffusers
import peft
import torch
from lycoris import LycorisNetwork, create_lycoris
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "crates", "adapters", "tests", "fixtures")
DIT = os.path.join(ROOT, "crates", "nextdit", "tests", "fixtures", "gqa16_original_bf16.safetensors")
TE = os.path.join(ROOT, "crates", "gemma", "tests", "fixtures", "model.safetensors")
DIT_CONFIG = os.path.join(ROOT, "crates", "nextdit", "tests", "fixtures", "gqa16_diffusers", "config.json")


def skeleton(weights):
    """A module tree with one nn.Linear per 2-D `*.weight`, named as the keys are."""
    root = nn.Module()
    for key in sorted(weights):
        w = weights[key]
        if not key.endswith(".weight") or w.dim() != 2 or "embed_tokens" in key:
            continue
        path = key[: -len(".weight")]
        parent = root
        *parents, leaf = path.split(".")
        for p in parents:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        bias = weights.get(path + ".bias")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.weight.data = w.clone().float()
        if bias is not None:
            lin.bias.data = bias.clone().float()
        parent.add_module(leaf, lin)
    return root


def canonical(path):
    """Rewrites a safetensors header with its `__metadata__` sorted: safetensors writes that map in hash
    order, so the same fixture would differ from run to run."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header, data = json.loads(f.read(n)), f.read()
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)


def addnet_hash(path):
    """AUTOMATIC1111's `addnet_hash_safetensors` (modules/hashes.py): SHA-256 of the data after the header."""
    import hashlib
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(n + 8)
        return hashlib.sha256(f.read()).hexdigest()


def linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def effective(model, names, biases=None):
    """Each layer's weight as its (possibly patched) forward computes it: (layer(I) − layer(0))ᵀ; the
    bias layer(0) goes into `biases` for layers that have one."""
    out = {}
    with torch.no_grad():
        for n, m in linears(model).items():
            if n not in names:
                continue
            b = m(torch.zeros(1, m.in_features))[0]
            out[n] = (m(torch.eye(m.in_features)) - b).T.contiguous()
            if biases is not None and b.abs().max() > 0:
                biases[n] = b.clone()
    return out


def to_diffusers(sd, cfg):
    """Original → diffusers module names (qkv split by the GQA head counts)."""
    head = cfg["hidden_size"] // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head, cfg["num_kv_heads"] * head
    out = {}
    for k, v in sd.items():
        if ".attention.qkv." in k:
            base = k.split(".attention.qkv.")[0]
            for part, t in zip(["to_q", "to_k", "to_v"], torch.split(v, [q, kv, kv])):
                out[f"{base}.attn.{part}.weight"] = t
            continue
        for a, b in [
            (".attention.out.", ".attn.to_out.0."),
            (".feed_forward.w1.", ".feed_forward.linear_1."),
            (".feed_forward.w2.", ".feed_forward.linear_2."),
            (".feed_forward.w3.", ".feed_forward.linear_3."),
            (".adaLN_modulation.1.", ".norm1.linear."),
            ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
            ("final_layer.linear.", "norm_out.linear_2."),
        ]:
            k = k.replace(a, b)
        out[k] = v
    return out


def perturb(params, gen, std):
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def lycoris_case(model, names, prefix, gen, multiplier, biases=None, std=0.15, **kwargs):
    """A LyCORIS network on `names`; returns its state dict (prefix renamed) and the effective weights."""
    LycorisNetwork.apply_preset({"target_module": [], "target_name": [re.escape(n) + "$" for n in names]})
    net = create_lycoris(model, multiplier, **kwargs)
    net.apply_to()
    keep = {n for n, _ in net.named_parameters() if not n.endswith("dora_scale")}
    perturb([p for n, p in net.named_parameters() if n in keep], gen, std)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith("dora_scale"):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    assert all(k.startswith("lycoris_") for k in sd), list(sd)[:3]
    sd = {prefix + k[len("lycoris_"):]: v for k, v in sd.items()}
    weights = effective(model, names, biases)
    net.restore()
    return sd, weights


def peft_case(model, names, gen, use_dora, alpha, r=4):
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=names, use_dora=use_dora, init_lora_weights=False)
    wrapped = get_peft_model(model, config)
    perturb([p for n, p in wrapped.named_parameters() if "lora_A" in n or "lora_B" in n], gen, 0.15)
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(wrapped).items()}
    merged = wrapped.merge_and_unload()
    weights = {n: m.weight.detach().clone() for n, m in linears(merged).items() if n in names}
    return sd, weights, config


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2026)
    os.makedirs(OUT, exist_ok=True)
    cfg = json.load(open(DIT_CONFIG))
    dit = {k.removeprefix("model.diffusion_model."): v.float() for k, v in load_file(DIT).items()}
    te = load_file(TE)
    dit_names = sorted(linears(skeleton(dit)))
    te_names = sorted(linears(skeleton(te)))
    # One block of each kind and the final layer keep the fixtures small; case 1 covers every linear.
    some = ("layers.1.", "noise_refiner.0.", "context_refiner.1.", "final_layer.")
    blocks = [n for n in dit_names if n.startswith(some)]
    diff_names = sorted(linears(skeleton(to_diffusers(dit, cfg))))
    diff_blocks = [n for n in diff_names if n.startswith(some[:3])]

    cases, expected = [], {}

    def record(name, adapter, weights, strength, te_strength=None, meta=None, note="", file=None):
        if file is None:
            save_file(adapter, os.path.join(OUT, f"{name}.safetensors"), metadata=meta)
            canonical(os.path.join(OUT, f"{name}.safetensors"))
        for layer, w in weights.items():
            expected[f"{name}/dit/{layer}"] = w.float().contiguous()
        cases.append(dict(name=name, file=f"{file or name}.safetensors",
                          hash=addnet_hash(os.path.join(OUT, f"{file or name}.safetensors"))[:12], strength=strength,
                          te_strength=te_strength if te_strength is not None else strength, layers=len(weights), note=note))

    def fused(weights):
        """diffusers-named weights → original names, to_q/k/v rows concatenated into qkv."""
        out = {}
        for n, w in weights.items():
            if n.endswith(".attn.to_q"):
                base = n[: -len(".attn.to_q")]
                out[f"{base}.attention.qkv"] = torch.cat([weights[f"{base}.attn.{p}"] for p in ["to_q", "to_k", "to_v"]])
            elif not re.search(r"\.attn\.to_[kv]$", n):
                back = n
                for a, b in [(".attn.to_out.0", ".attention.out"), (".feed_forward.linear_", ".feed_forward.w"),
                             (".norm1.linear", ".adaLN_modulation.1")]:
                    back = back.replace(a, b)
                out[back] = w
        return out

    # 1. kohya LoRA on every DiT linear (embedders included) and the text encoder, DiT 0.8 / TE 0.5.
    sd_dit, w_dit = lycoris_case(skeleton(dit), dit_names, "lora_unet_", gen, 0.8, algo="locon", linear_dim=4, linear_alpha=2)
    sd_te, w_te = lycoris_case(skeleton(te), te_names, "lora_te_", gen, 0.5, algo="locon", linear_dim=4, linear_alpha=8)
    record("kohya_lora", {**sd_dit, **sd_te}, w_dit, 0.8, 0.5, note="LyCORIS LoCon, kohya names, DiT + TE")
    for layer, w in w_te.items():
        expected[f"kohya_lora/te/{layer}"] = w.float().contiguous()
    cases[-1]["layers"] += len(w_te)
    # 2. LoKr as Sakiko-Lumina was trained (algo=lokr, factor=3), kohya names, w2 decomposed.
    sd, w = lycoris_case(skeleton(dit), blocks, "lora_unet_", gen, 1.0, algo="lokr", factor=3, linear_dim=4, linear_alpha=3)
    record("kohya_lokr", sd, w, 1.0, note="LyCORIS LoKr factor 3")
    # 3. LoKr with both factors decomposed on diffusers modules (LyCORIS standalone names), strength 0.7.
    sd, w = lycoris_case(skeleton(to_diffusers(dit, cfg)), diff_blocks, "lycoris_", gen, 0.7, algo="lokr", factor=2,
                         decompose_both=True, linear_dim=2, linear_alpha=4)
    record("lycoris_lokr_diffusers", sd, fused(w), 0.7, note="LyCORIS LoKr decompose_both on to_q/to_k/to_v")
    # 4. LoHa, kohya names, strength 0.6.
    sd, w = lycoris_case(skeleton(dit), blocks, "lora_unet_", gen, 0.6, algo="loha", linear_dim=4, linear_alpha=2, std=0.3)
    record("kohya_loha", sd, w, 0.6, note="LyCORIS LoHa")
    # 5. DoRA (LoCon with weight decomposition on the output axis), at strength 1 and blended at 0.6.
    sd, w = lycoris_case(skeleton(dit), blocks, "lora_unet_", gen, 1.0, algo="locon", linear_dim=4, linear_alpha=2, dora_wd=True)
    record("kohya_dora", sd, w, 1.0, note="LyCORIS LoCon + DoRA (dora_scale [out, 1])")
    base = {n: m.weight.detach() for n, m in linears(skeleton(dit)).items()}
    record("kohya_dora_blend", sd, {n: base[n] + 0.6 * (v - base[n]) for n, v in w.items()}, 0.6,
           note="the same DoRA at strength 0.6: ComfyUI's W + s·(W' − W)", file="kohya_dora")
    # 6. Full diffs with bias diffs (LyCORIS algo=full: `diff`, `diff_b`).
    biases = {}
    sd, w = lycoris_case(skeleton(dit), blocks, "lora_unet_", gen, 0.5, biases=biases, algo="full", std=0.05)
    assert any(k.endswith(".diff_b") for k in sd) and biases
    record("kohya_full", sd, w, 0.5, note="LyCORIS full: diff + diff_b")
    for n, b in biases.items():
        expected[f"kohya_full/dit/{n}.bias"] = b.contiguous()
    # 7. PEFT LoRA on diffusers modules, saved by diffusers (`transformer.` keys, alpha in metadata).
    sd, w, config = peft_case(skeleton(to_diffusers(dit, cfg)), diff_blocks, gen, use_dora=False, alpha=8)
    with tempfile.TemporaryDirectory() as d:
        peft_sd = {k.removeprefix("base_model.model."): v for k, v in sd.items()}
        # Sets (target_modules) are ordered by Python's per-run string hash: sort them.
        meta = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
        diffusers.Lumina2Pipeline.save_lora_weights(d, transformer_lora_layers=peft_sd, weight_name="a.safetensors",
                                                     transformer_lora_adapter_metadata=meta)
        from safetensors import safe_open
        with safe_open(os.path.join(d, "a.safetensors"), "pt") as f:
            saved, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert all(k.startswith("transformer.") for k in saved) and "lora_adapter_metadata" in meta
    record("diffusers_peft_lora", saved, fused(w), 1.0, meta=meta, note="PEFT r 4, lora_alpha 8, via diffusers")
    # 8. PEFT DoRA on diffusers modules (`lora_magnitude_vector`), alpha = r.
    sd, w, _ = peft_case(skeleton(to_diffusers(dit, cfg)), diff_blocks, gen, use_dora=True, alpha=4)
    record("peft_dora", {"transformer." + k.removeprefix("base_model.model."): v for k, v in sd.items()}, fused(w), 1.0,
           note="PEFT DoRA")
    # 9. ComfyUI's "non-diffusers" form: PEFT keys on original modules under `diffusion_model.`.
    sd, w, _ = peft_case(skeleton(dit), blocks, gen, use_dora=False, alpha=4)
    record("comfyui_peft", {"diffusion_model." + k.removeprefix("base_model.model."): v for k, v in sd.items()}, w, 1.0,
           note="PEFT keys, diffusion_model. prefix")

    # 10. DoRA on the input axis (LyCORIS wd_on_output=False: dora_scale [1, in]).
    sd, w = lycoris_case(skeleton(dit), blocks, "lora_unet_", gen, 1.0, algo="locon", linear_dim=4, linear_alpha=8,
                         dora_wd=True, wd_on_output=False)
    assert all(v.shape[0] == 1 for k, v in sd.items() if k.endswith("dora_scale"))
    record("kohya_dora_input_axis", sd, w, 1.0, note="LyCORIS LoCon + DoRA, dora_scale [1, in]")
    # 11. kohya sd-scripts' split_qkv form: three rank-r LoRAs on q, k, v saved merged, lora_down
    #     stacked [3r, in] and lora_up block-diagonal [out, 3r], with the one alpha. Every loader takes
    #     rank = rows(lora_down) = 3r (ComfyUI's alpha / rank): the expected weight is ComfyUI's
    #     formula W + s·alpha/(3r)·up·down on these tensors.
    r, alpha, s = 2, 3.0, 0.9
    head = cfg["hidden_size"] // cfg["num_attention_heads"]
    rows = [cfg["num_attention_heads"] * head, cfg["num_kv_heads"] * head, cfg["num_kv_heads"] * head]
    sd, w = {}, {}
    for n in blocks:
        if not n.endswith("attention.qkv"):
            continue
        inp = dit[n + ".weight"].shape[1]
        ups = [torch.randn(o, r, generator=gen) * 0.2 for o in rows]
        down = torch.cat([torch.randn(r, inp, generator=gen) * 0.2 for _ in rows])
        up = torch.block_diag(*ups)
        key = "lora_unet_" + n.replace(".", "_")
        sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"] = down, up
        sd[key + ".alpha"] = torch.tensor(alpha)
        w[n] = dit[n + ".weight"] + s * (alpha / down.shape[0]) * (up @ down)
    record("kohya_split_qkv", sd, w, s, note="sd-scripts split_qkv saved form; ComfyUI's alpha / (3r)")

    save_file(expected, os.path.join(OUT, "expected.safetensors"),
              metadata={"torch": torch.__version__, "lycoris-lora": importlib.metadata.version("lycoris-lora"),
                        "peft": peft.__version__, "diffusers": diffusers.__version__})
    canonical(os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print("wrote", len(cases), "cases,", len(expected), "expected tensors")


E2E = os.path.join(ROOT, "crates", "pipeline", "tests", "fixtures", "e2e_adapters")


def e2e():
    """A reference generation with adapters on the e2e models of `pipeline.py`: a PEFT LoRA added to
    diffusers' own `Lumina2Transformer2DModel` (its PEFT integration, saved by `save_lora_weights`) and
    fused at strength 0.8 by diffusers' `fuse_lora`, and a LyCORIS LoKr on transformers' `Gemma2Model`
    under kohya names (`lora_te_`) running in LyCORIS's own forward at multiplier 0.6."""
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    import pipeline as P

    gen = torch.Generator().manual_seed(7)
    gemma, dit, vae, sp = P.models()
    loras = os.path.join(E2E, "loras")
    os.makedirs(loras, exist_ok=True)

    targets = sorted(n for n, m in dit.named_modules()
                     if isinstance(m, nn.Linear) and n.startswith(("layers.", "noise_refiner.", "context_refiner.")))
    config = LoraConfig(r=4, lora_alpha=2, target_modules=targets, init_lora_weights=False)
    dit.add_adapter(config)
    perturb([p for n, p in dit.named_parameters() if "lora_" in n], gen, 0.1)
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(dit).items()}
    meta = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    diffusers.Lumina2Pipeline.save_lora_weights(loras, transformer_lora_layers=sd, weight_name="tiny_dit_lora.safetensors",
                                                 transformer_lora_adapter_metadata=meta)
    canonical(os.path.join(loras, "tiny_dit_lora.safetensors"))
    dit.fuse_lora(lora_scale=0.8)

    names = sorted(n for n, m in gemma.named_modules() if isinstance(m, nn.Linear))
    LycorisNetwork.apply_preset({"target_module": [], "target_name": [re.escape(n) + "$" for n in names]})
    net = create_lycoris(gemma, 0.6, algo="lokr", factor=2, linear_dim=2, linear_alpha=1)
    net.apply_to()
    perturb(list(net.parameters()), gen, 0.1)
    te = {"lora_te_" + k[len("lycoris_"):]: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    save_file(te, os.path.join(loras, "tiny_te_lokr.safetensors"))
    canonical(os.path.join(loras, "tiny_te_lokr.safetensors"))

    c = dict(P.CASES["euler"], seed=11)
    expected = P.run_case("adapters", c, gemma, dit, vae, sp, None)
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(E2E, "expected.safetensors"),
              metadata={"case": json.dumps(c), "dit_lora": "tiny_dit_lora:0.8", "te_lokr": "<lora:tiny_te_lokr:0.6>"})
    canonical(os.path.join(E2E, "expected.safetensors"))
    print("e2e adapters: latent", tuple(expected["adapters/latent"].shape))


if __name__ == "__main__":
    main()
    e2e()
