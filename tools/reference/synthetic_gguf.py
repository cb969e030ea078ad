"""A synthetic Lumina 2 denoiser GGUF at the real 2B shapes, as ComfyUI-GGUF lays it out (original
key names, `lumina2` architecture, Q8_0 for the 2-D weights llama.cpp's Lumina 2 quantisation
quantises, F32 for vectors, BF16 for the rest), with random values: for measuring memory
(`cargo run --release -p sakiko-nextdit --features wgpu --example load_q8_0`). About 2.7 GB,
written to target/nextdit-2b/ and not committed.

    .venv-ref/bin/python tools/reference/synthetic_gguf.py [OUT]
"""

import os
import sys

import gguf
import numpy as np
import torch
from diffusers import Lumina2Transformer2DModel
from gguf import GGMLQuantizationType as T

sys.path.insert(0, os.path.dirname(__file__))
from lowp import gguf_type  # noqa: E402
from nextdit import to_original  # noqa: E402
from stage_bench import DIT  # noqa: E402


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/nextdit-2b/synthetic_q8_0.gguf")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    config = DIT["2b"]
    with torch.device("meta"):
        model = Lumina2Transformer2DModel(**config)
    shapes = to_original(model.state_dict(), config)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(out, "lumina2")
    for name, v in shapes.items():
        qtype = gguf_type(name, v)
        data = (rng.standard_normal(tuple(v.shape), dtype=np.float32) * 0.02).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}: {os.path.getsize(out) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
