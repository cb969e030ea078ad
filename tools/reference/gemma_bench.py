"""transformers side of `cargo bench -p sakiko-gemma --bench encode`: a mid-size Gemma-2 (random
weights) saved to target/gemma-bench/, and the time of encoding one 256-token prompt on the CPU
(f32, 2 threads, eager attention, no softcap: the ComfyUI configuration).

    .venv-ref/bin/python tools/reference/gemma_bench.py
"""

import json
import os
import statistics
import time

import torch
from safetensors.torch import save_file
from transformers import Gemma2Config, Gemma2Model

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "gemma-bench")
CONFIG = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=6, num_attention_heads=8,
              num_key_value_heads=4, head_dim=96, rms_norm_eps=1e-6, query_pre_attn_scalar=96,
              hidden_activation="gelu_pytorch_tanh", max_position_embeddings=1024, attn_logit_softcapping=None,
              sliding_window=4096, final_logit_softcapping=30.0)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Gemma2Model(Gemma2Config(**CONFIG, attn_implementation="eager")).eval()
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    ids = torch.randint(3, CONFIG["vocab_size"], (1, 256))
    times = []
    with torch.no_grad():
        model(ids, output_hidden_states=True)
        for _ in range(10):
            start = time.perf_counter()
            model(ids, output_hidden_states=True)
            times.append(time.perf_counter() - start)
    print(f"transformers Gemma-2 mid (D 768, 6 layers), 256 tokens, 2 threads: median {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
