"""Reference fixture for `sakiko_pipeline::latent_preview`: ComfyUI's Latent2RGBPreviewer with the
FLUX latent format (which ComfyUI's Lumina2 model uses), as in ComfyUI 0219e5be
(latent_preview.py: decode_latent_to_preview, preview_to_image; comfy/latent_formats.py: Flux).

The latent is random with a spread wide enough that some pixels clamp, batch 2 (item 0 is
previewed), and not square (so a swapped width/height shows).

    .venv-ref/bin/python tools/reference/preview.py   # writes crates/pipeline/tests/fixtures/preview.safetensors
"""

import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "pipeline", "tests", "fixtures", "preview.safetensors")

# comfy/latent_formats.py, class Flux.
LATENT_RGB_FACTORS = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
]
LATENT_RGB_FACTORS_BIAS = [-0.0329, -0.0718, -0.0851]


def preview_to_image(preview_image):
    preview_image = preview_image.cpu()
    preview_image.clamp_(-1.0, 1.0)
    preview_image.add_(1.0)
    preview_image.mul_(127.5)
    preview_image.round_()
    return preview_image.to(dtype=torch.uint8)


def decode_latent_to_preview(x0):
    factors = torch.tensor(LATENT_RGB_FACTORS, device="cpu").transpose(0, 1).to(dtype=x0.dtype)
    bias = torch.tensor(LATENT_RGB_FACTORS_BIAS, device="cpu").to(dtype=x0.dtype)
    x0 = x0[0]
    latent_image = torch.nn.functional.linear(x0.movedim(0, -1), factors, bias=bias)
    return preview_to_image(latent_image)


torch.manual_seed(0)
latent = torch.randn(2, 16, 6, 5, dtype=torch.float32) * 3.0
image = decode_latent_to_preview(latent.clone())  # [h, w, 3] uint8
os.makedirs(os.path.dirname(OUT), exist_ok=True)
save_file({"latent": latent.contiguous(), "image": image.contiguous()}, OUT)
clamped = ((image == 0) | (image == 255)).float().mean().item()
print(f"wrote {OUT}: image {tuple(image.shape)}, {clamped:.0%} of values clamped")
