"""Low-precision weight files, written by the real tools of each format, and what they decode to.

1. `crates/weights/tests/fixtures/`:
   - `types.gguf`: one tensor per GGML type sakiko-weights reads, written by llama.cpp's `gguf`
     package (`GGUFWriter`): `q.<TYPE>` holds random data quantised by `gguf.quants.quantize` (the
     types it can quantise), `r.<TYPE>` random block bytes with finite random f16 scales (every
     type, K-quants included, every bit of the layout exercised); plus shapes of rank 1 and 3, and a
     tensor with ComfyUI-GGUF's `comfy.gguf.orig_shape.*` metadata. `aligned64.gguf`: two tensors
     with `general.alignment` 64.
   - `fp8.safetensors`: all 256 codes of `float8_e4m3fn` and `float8_e5m2`; a ComfyUI scaled-fp8
     layer (`scale_weight`, `scale_input`) and one in the newer naming (`weight_scale`,
     `comfy_quant`).
   - `lowp_expected.safetensors`: `gguf.quants.dequantize` of every GGUF tensor and PyTorch's
     dequantisation (`w.to(float32) * scale`) of every fp8 one.
2. `crates/pipeline/tests/fixtures/lowp/`: a tiny NextDiT with quantisable widths (D 96) as a Q8_0
   GGUF in ComfyUI-GGUF's `lumina2` layout (original names, no prefix, its exclusion rules) and as
   a ComfyUI scaled-fp8 file; the e2e text encoder in fp8 (newer `weight_scale` naming) and the e2e
   VAE as a plain fp8 cast; and the reference pipeline (`pipeline.py`) run on the dequantised
   weights: case `gguf` (Q8_0 DiT, fp16 text encoder, bf16 VAE from `e2e/`) and case `fp8` (all
   three fp8).

    .venv-ref/bin/python tools/reference/lowp.py
"""

import json
import os
import sys

import gguf
import numpy as np
import torch
from diffusers import Lumina2Transformer2DModel
from gguf import GGMLQuantizationType as T
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import pipeline as P  # noqa: E402
from nextdit import to_original  # noqa: E402
from vae import to_bfl  # noqa: E402

HERE = os.path.dirname(__file__)
WEIGHTS = os.path.join(HERE, "..", "..", "crates", "weights", "tests", "fixtures")
LOWP = os.path.join(HERE, "..", "..", "crates", "pipeline", "tests", "fixtures", "lowp")
F32 = torch.float32
E4M3 = torch.float8_e4m3fn

QUANTISABLE = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
READ = QUANTISABLE + [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of the f16 scale fields in one block of each block type (ggml-common.h).
HALF_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q2_K: [80, 82],
               T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
# A NextDiT whose linear inputs (96, 128) are whole Q8_0 blocks; head_dim 24 = 3 × 8 keeps the
# configuration detectable from the shapes, FFN width 128 = int(0.3 · 384) rounded up to 128.
DIT = dict(P.DIT, hidden_size=96, num_layers=1, num_refiner_layers=1, num_attention_heads=4, num_kv_heads=1,
           multiple_of=128, ffn_dim_multiplier=0.3, axes_dim_rope=[8, 8, 8])
# ComfyUI-GGUF's lumina2 rules (tools/convert.py, lcpp.patch): these stay unquantised.
GGUF_KEEP = ("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.", "noise_refiner.")


def random_blocks(rng, qtype, rows, cols):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for at in HALF_FIELDS[qtype]:
        d = rng.uniform(-0.05, 0.05, size=(rows, cols // block)).astype(np.float16)
        raw[..., at:at + 2] = d.view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1)


def gguf_fixtures(expected):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(os.path.join(WEIGHTS, "types.gguf"), "lumina2")
    for qtype in QUANTISABLE:
        data = rng.normal(0, 0.1, size=(3, 512)).astype(np.float32)
        q = gguf.quants.quantize(data, qtype)
        w.add_tensor(f"q.{qtype.name}", q, raw_dtype=qtype)
        expected[f"q.{qtype.name}"] = torch.from_numpy(gguf.quants.dequantize(q, qtype).copy())
    for qtype in READ[3:]:
        raw = random_blocks(rng, qtype, 2, 512)
        w.add_tensor(f"r.{qtype.name}", raw, raw_dtype=qtype)
        expected[f"r.{qtype.name}"] = torch.from_numpy(gguf.quants.dequantize(raw, qtype).copy())
    for name, shape in (("rank1", (7,)), ("rank3", (2, 3, 4))):
        data = rng.normal(size=shape).astype(np.float32)
        w.add_tensor(name, data)
        expected[name] = torch.from_numpy(data)
    # A [4, 8, 1, 1] kernel stored as 2-D with its PyTorch shape in metadata, as ComfyUI-GGUF does.
    conv = rng.normal(size=(4, 8)).astype(np.float32)
    w.add_tensor("conv", conv)
    w.add_array("comfy.gguf.orig_shape.conv", [4, 8, 1, 1])
    expected["conv"] = torch.from_numpy(conv).reshape(4, 8, 1, 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    w = gguf.GGUFWriter(os.path.join(WEIGHTS, "aligned64.gguf"), "lumina2")
    w.add_custom_alignment(64)
    for name in ("a64", "b64"):
        data = rng.normal(size=(3, 5)).astype(np.float32)
        w.add_tensor(name, data)
        expected[name] = torch.from_numpy(data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def scaled_fp8(w):
    """ComfyUI's per-tensor scaling: scale = amax / 448, stored fp8 = w / scale."""
    scale = (w.abs().max().to(F32) / 448.0).clamp(min=1e-12)
    return (w.to(F32) / scale).to(E4M3), scale


def fp8_fixtures(expected):
    gen = torch.Generator().manual_seed(2)
    codes = torch.arange(256, dtype=torch.uint8)
    t = {"codes.e4m3": codes.clone().view(E4M3), "codes.e5m2": codes.clone().view(torch.float8_e5m2)}
    legacy, legacy_scale = scaled_fp8(torch.randn(6, 10, generator=gen))
    t.update({"legacy.weight": legacy, "legacy.scale_weight": legacy_scale, "legacy.scale_input": torch.tensor(1.0)})
    newer, newer_scale = scaled_fp8(torch.randn(4, 8, generator=gen) * 3)
    t.update({"newer.weight": newer, "newer.weight_scale": newer_scale,
              "newer.comfy_quant": torch.frombuffer(bytearray(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)})
    save_file(t, os.path.join(WEIGHTS, "fp8.safetensors"))
    for k in ("codes.e4m3", "codes.e5m2"):
        expected[k] = t[k].to(F32)
    expected["legacy.weight"] = legacy.to(F32) * legacy_scale
    expected["newer.weight"] = newer.to(F32) * newer_scale


def dit_model():
    torch.manual_seed(0)
    dit = Lumina2Transformer2DModel(**DIT).eval()
    P.perturb(dit, torch.Generator().manual_seed(3), torch.bfloat16, norm_one=True)
    return dit


def original_name(k, v):
    """The original (ComfyUI) key of one diffusers tensor; q, k and v become rows of `qkv`."""
    for part in (".attn.to_q.", ".attn.to_k.", ".attn.to_v."):
        if part in k:
            return k.split(part)[0] + ".attention.qkv.weight"
    (name,) = set(to_original({k: v}, DIT)) - {"norm_final.weight"}
    return name


def gguf_type(name, v):
    if v.ndim == 2 and not any(s in name for s in GGUF_KEEP) and v.shape[-1] % 32 == 0:
        return T.Q8_0
    return T.F32 if v.ndim == 1 or v.numel() <= 1024 else T.BF16


def gguf_dit(dit, path):
    """The DiT as ComfyUI-GGUF writes it; returns the diffusers state dict of its dequantised values.
    Quantisation works row by row, so q/k/v quantised alone equal their rows of `qkv` quantised."""
    sd = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    w = gguf.GGUFWriter(path, "lumina2")
    for name, v in to_original(sd, DIT).items():
        qtype = gguf_type(name, v)
        data = v.to(F32).numpy()
        w.add_tensor(name, gguf.quants.quantize(data, qtype) if qtype != T.F32 else data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = {}
    for k, v in sd.items():
        qtype = gguf_type(original_name(k, v), v)
        data = v.to(F32).numpy()
        out[k] = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(data, qtype), qtype).copy()) \
            if qtype != T.F32 else v.to(F32)
    # The same values as dequantising the file's own tensors.
    reader = gguf.GGUFReader(path)
    ref = to_original(out, DIT)
    for t in reader.tensors:
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref[t.name].shape)
        assert np.array_equal(deq, ref[t.name].numpy()), t.name
    return out


def fp8_state(sd, keep=lambda k, v: False, scaled=True):
    """fp8 copies of the ≥ 2-D weights (per-tensor scaled, or a plain cast); returns the file's
    tensors and the dequantised state dict."""
    file, deq = {}, {}
    for k, v in sd.items():
        if v.ndim < 2 or keep(k, v):
            file[k], deq[k] = v, v.to(F32)
        elif scaled:
            q, s = scaled_fp8(v)
            file[k], deq[k] = q, q.to(F32) * s
            file[k[:-len("weight")] + "scale_weight"] = s
        else:
            file[k] = v.to(E4M3)
            deq[k] = file[k].to(F32)
    return file, deq


def main():
    torch.set_num_threads(1)
    os.makedirs(WEIGHTS, exist_ok=True)
    for sub in ("diffusion_models", "text_encoders", "vae"):
        os.makedirs(os.path.join(LOWP, "models", sub), exist_ok=True)
    expected = {}
    gguf_fixtures(expected)
    fp8_fixtures(expected)
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(WEIGHTS, "lowp_expected.safetensors"),
              metadata={"torch": torch.__version__})

    gemma, _, vae, sp = P.models()
    dit = dit_model()
    init = None
    results = {}

    # Case gguf: the Q8_0 DiT with the e2e text encoder (fp16) and VAE (bf16).
    deq = gguf_dit(dit, os.path.join(LOWP, "models", "diffusion_models", "tiny_lumina_q8_0.gguf"))
    dit.load_state_dict(deq)
    # The e2e text encoder and VAE hold these values exactly (fp16- and bf16-rounded).
    results.update(P.run_case("gguf", P.CASES["euler"], gemma, dit, vae, sp, init))

    # Case fp8: scaled-fp8 DiT (ComfyUI's legacy naming, marker tensor, `scale_input` present),
    # fp8 text encoder (newer `weight_scale` + `comfy_quant`; embeddings a plain cast), plain fp8 VAE.
    dit = dit_model()
    orig = to_original({k: v.detach().clone() for k, v in dit.state_dict().items()}, DIT)
    file, deq_orig = fp8_state(orig, keep=lambda k, v: not k.startswith(("layers.", "noise_refiner.", "context_refiner.")))
    file["scaled_fp8"] = torch.zeros(2, dtype=E4M3)
    file["layers.0.attention.qkv.scale_input"] = torch.tensor(1.0)
    save_file({k: v.contiguous() for k, v in file.items()},
              os.path.join(LOWP, "models", "diffusion_models", "tiny_lumina_scaled_fp8.safetensors"))
    sd = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    for k, v in sd.items():
        o = original_name(k, v)
        if o.endswith(".attention.qkv.weight"):
            # Rows of the dequantised qkv.
            q, kv = DIT["num_attention_heads"], DIT["num_kv_heads"]
            hd = DIT["hidden_size"] // q
            start = {"to_q": 0, "to_k": q * hd, "to_v": (q + kv) * hd}[k.split(".attn.")[1].split(".")[0]]
            sd[k] = deq_orig[o][start:start + v.shape[0]]
        else:
            sd[k] = deq_orig[o]
    dit.load_state_dict(sd)

    te_sd = {"model." + k: v.to(torch.float16) for k, v in gemma.state_dict().items()}
    te_file, te_deq = {}, {}
    for k, v in te_sd.items():
        if v.ndim == 2 and "embed_tokens" not in k:
            q, s = scaled_fp8(v)
            te_file[k], te_deq[k] = q, q.to(F32) * s
            layer = k[:-len("weight")]
            te_file[layer + "weight_scale"] = s
            te_file[layer + "comfy_quant"] = torch.frombuffer(bytearray(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
        elif v.ndim == 2:
            te_file[k] = v.to(E4M3)
            te_deq[k] = te_file[k].to(F32)
        else:
            te_file[k], te_deq[k] = v, v.to(F32)
    with open(P.SPM, "rb") as f:
        te_file["spiece_model"] = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    save_file({k: v.contiguous() for k, v in te_file.items()},
              os.path.join(LOWP, "models", "text_encoders", "tiny_gemma2_fp8.safetensors"))
    gemma.load_state_dict({k[len("model."):]: v for k, v in te_deq.items()})

    vae_sd = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    vae_file, vae_deq = fp8_state({k: v.to(torch.bfloat16) for k, v in to_bfl(vae_sd).items()}, scaled=False)
    save_file({k: v.contiguous() for k, v in vae_file.items()}, os.path.join(LOWP, "models", "vae", "tiny_ae_fp8.safetensors"))
    back = {}
    for k, v in vae_sd.items():
        (name,) = to_bfl({k: v})
        back[k] = vae_deq[name].reshape(v.shape)
    vae.load_state_dict(back)
    results.update(P.run_case("fp8", P.CASES["euler"], gemma, dit, vae, sp, init))

    with open(os.path.join(LOWP, "dit_config.json"), "w") as f:
        json.dump({"_class_name": "Lumina2Transformer2DModel", **DIT}, f, indent=2)
    save_file({k: v.contiguous() for k, v in results.items()}, os.path.join(LOWP, "expected.safetensors"),
              metadata={"case": json.dumps(P.CASES["euler"]), "torch": torch.__version__})
    total = sum(os.path.getsize(os.path.join(d, f)) for root in (WEIGHTS, LOWP)
                for d, _, fs in os.walk(root) for f in fs)
    print(f"fixtures: {total} bytes")


if __name__ == "__main__":
    main()
