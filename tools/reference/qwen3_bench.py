"""transformers side of `cargo bench -p sakiko-prompter --bench generate` and
`sakiko bench --stage prompter --preset mid`: a mid-size Qwen3 (random weights; the shapes of the
`mid` preset) saved to target/qwen3-bench/, and transformers' prefill and decode rates on the CPU
(f32, 2 threads, eager attention, greedy, KV cache), for a 128-token prompt and 32 new tokens.

    .venv-ref/bin/python tools/reference/qwen3_bench.py
"""

import json
import os
import statistics
import time

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "qwen3-bench")
CONFIG = dict(model_type="qwen3", vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
              num_attention_heads=8, num_key_value_heads=4, head_dim=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
              max_position_embeddings=40960, tie_word_embeddings=True)
PROMPT, NEW = 128, 32


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**CONFIG, attn_implementation="eager")).eval()
    os.makedirs(OUT, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    ids = torch.tensor([[1 + i * 7919 % (CONFIG["vocab_size"] - 1) for i in range(PROMPT)]])
    prefill, decode = [], []
    with torch.no_grad():
        for run in range(6):
            start = time.perf_counter()
            out = model(ids, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            t_prefill = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(NEW - 1):
                out = model(token, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                token = out.logits[:, -1].argmax(-1, keepdim=True)
            t_decode = time.perf_counter() - start
            if run > 0:
                prefill.append(t_prefill)
                decode.append(t_decode)
    p, d = statistics.median(prefill), statistics.median(decode)
    print(f"transformers Qwen3 mid (D 512, 8 layers), 2 threads: prefill {PROMPT} tokens {p * 1000:.1f} ms "
          f"({PROMPT / p:.0f} tokens/s); decode {NEW - 1} steps {d * 1000:.1f} ms ({(NEW - 1) / d:.1f} tokens/s)")


if __name__ == "__main__":
    main()
