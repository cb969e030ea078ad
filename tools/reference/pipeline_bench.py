"""PyTorch timings for the pipeline benches (`benches/denoise_step.rs`, `benches/generate.rs`): the
same tiny models (rebuilt by `pipeline.py`'s `models()`, identical weights), the same inputs, the
same thread count as the Rust side (2 by default), best of several runs and the median.

    .venv-ref/bin/python tools/reference/pipeline_bench.py [THREADS]
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import sampling as S  # noqa: E402
from pipeline import PREFIX, cfg_x0, encode_text, models  # noqa: E402


def timed(fn, runs):
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out), statistics.median(out)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    gemma, dit, vae, sp = models()
    _, cond = encode_text(gemma, sp, f"{PREFIX} 1girl, smile")
    _, uncond = encode_text(gemma, sp, "")
    x = torch.randn([1, 16, 64, 64], generator=torch.Generator().manual_seed(0))
    best, med = timed(lambda: cfg_x0(dit, x, torch.tensor(0.5), cond, uncond, 4.5), 10)
    print(f"cfg step, tiny e2e model, 512x512: best {best * 1e3:.1f} ms, median {med * 1e3:.1f} ms ({threads} threads)")

    def generate():
        _, c = encode_text(gemma, sp, f"{PREFIX} 1girl, blue hair, cherry blossoms")
        _, u = encode_text(gemma, sp, "lowres")
        ms = S.FlowSampling(shift=6.0)
        sigmas = S.calculate_sigmas(ms, "linear_quadratic", 10).to(torch.float32)
        noise = torch.randn([1, 16, 32, 32], generator=torch.Generator().manual_seed(42))
        anc = torch.Generator().manual_seed(42)
        states = S.run_sampler("euler_ancestral", sigmas[0] * noise, sigmas,
                               lambda x, s, i, cap: cfg_x0(dit, x, s, c, u, 4.5),
                               lambda like: torch.randn(like.shape, generator=anc))
        with torch.no_grad():
            img = vae.decode(states[-1] / 0.3611 + 0.1159).sample
        return (torch.clamp((img + 1) / 2, 0, 1) * 255).to(torch.uint8)

    best, med = timed(generate, 5)
    print(f"generate 256x256, 10 steps, tiny models in memory: best {best * 1e3:.1f} ms, median {med * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
