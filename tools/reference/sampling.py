"""Reference fixtures for `sakiko-sampling`: ComfyUI's flow sigma table, schedulers, torch CPU noise,
samplers and guidance, written from the formulas of ComfyUI (comfy/model_sampling.py, comfy/samplers.py,
comfy/k_diffusion/sampling.py, comfy_extras/nodes_lumina2.py, nodes_cfg.py) and diffusers' Lumina2 pipeline.

Arithmetic follows ComfyUI's: f32 tensors and 0-d f32 tensors where ComfyUI uses them, Python floats
where it uses Python floats. Samplers run against a toy analytic denoiser (Gaussian data, x0 known in
closed form), so the trajectories are exact functions of the formulas.

    .venv-ref/bin/python tools/reference/sampling.py   # writes crates/sampling/tests/fixtures/sampling.safetensors
"""

import math
import os

import numpy as np
import scipy.stats
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "sampling", "tests", "fixtures", "sampling.safetensors")
F32 = torch.float32
tensors = {}


# ---------------------------------------------------------------- model sampling (ModelSamplingDiscreteFlow, CONST)
def time_snr_shift(alpha, t):
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


class FlowSampling:
    def __init__(self, shift=6.0, multiplier=1.0):
        self.shift, self.multiplier = shift, multiplier
        ts = self.sigma((torch.arange(1, 1001, 1) / 1000) * multiplier)
        self.sigmas = ts.to(F32)

    def sigma(self, timestep):
        return time_snr_shift(self.shift, timestep / self.multiplier)

    def timestep(self, sigma):
        return sigma * self.multiplier

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]


# ---------------------------------------------------------------- schedulers (comfy/samplers.py)
def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def simple(ms, steps):
    sigs = []
    ss = len(ms.sigmas) / steps
    for x in range(steps):
        sigs += [float(ms.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def normal(ms, steps, sgm=False):
    start = ms.timestep(ms.sigma_max)
    end = ms.timestep(ms.sigma_min)
    append = True
    if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
        steps += 1
        append = False
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    if append:
        sigs += [0.0]
    return torch.FloatTensor(sigs)


def beta(ms, steps, alpha=0.6, beta_=0.6):
    total = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(ts, alpha, beta_) * total)
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs += [float(ms.sigmas[int(t)])]
        last = t
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def linear_quadratic(ms, steps, threshold_noise=0.025, linear_steps=None):
    if steps == 1:
        s = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        qs = steps - linear_steps
        qc = diff / (linear_steps * qs ** 2)
        lc = threshold_noise / linear_steps - 2 * diff / (qs ** 2)
        c0 = qc * (linear_steps ** 2)
        quad = [qc * (i ** 2) + lc * i + c0 for i in range(linear_steps, steps)]
        s = lin + quad + [1.0]
        s = [1.0 - x for x in s]
    return torch.FloatTensor(s) * ms.sigma_max.cpu()


def karras(ms, steps, rho=7.0):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    ramp = torch.linspace(0, 1, steps)
    min_inv, max_inv = smin ** (1 / rho), smax ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential(ms, steps):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    return append_zero(torch.linspace(math.log(smax), math.log(smin), steps).exp())


def kl_optimal(ms, steps):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    idx = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = idx.new_zeros(steps + 1)
    sigmas[:-1] = (idx * math.atan(smin) + (1 - idx) * math.atan(smax)).tan_()
    return sigmas


def ddim_uniform(ms, steps):
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs += [float(ms.sigmas[x])]
        x += ss
    return torch.FloatTensor(sigs[::-1])


SCHEDULERS = {
    "simple": simple,
    "normal": normal,
    "sgm_uniform": lambda ms, n: normal(ms, n, sgm=True),
    "beta": beta,
    "linear_quadratic": linear_quadratic,
    "karras": karras,
    "exponential": exponential,
    "kl_optimal": kl_optimal,
    "ddim_uniform": ddim_uniform,
}


def calculate_sigmas(ms, name, steps, denoise=1.0):
    if denoise > 0.9999:
        return SCHEDULERS[name](ms, steps)
    total = int(steps / denoise)
    return SCHEDULERS[name](ms, total)[-(steps + 1):]


# ---------------------------------------------------------------- toy denoiser and guidance
S2 = np.float32(0.25)  # data variance


def toy_denoised(x, sigma, mu):
    """E[x0 | x] for x = sigma*eps + (1-sigma)*x0, x0 ~ N(mu, S2) elementwise; scalars in f32."""
    sigma = np.float32(sigma)
    a = np.float32(1) - sigma
    k = (a * S2) / (a * a * S2 + sigma * sigma)
    return mu + (x - mu * float(a)) * float(k)


class Counter:
    calls = 0


def guided(x, sigma, step, steps, mu_c, mu_u, guidance, disable_cfg1=False, capture=None):
    """ComfyUI's sampling_function + cfg_function (+ post-cfg functions), for one guidance variant."""
    kind = guidance["kind"]
    scale = guidance["scale"]
    Counter.calls += 1
    c = toy_denoised(x, sigma, mu_c)
    skip_uncond = math.isclose(scale, 1.0) and not disable_cfg1
    if kind == "diffusers":
        skip_uncond = not (scale > 1.0 and (step + 1) / steps <= guidance["trunc_ratio"])
    if skip_uncond:
        u = torch.zeros_like(x)
    else:
        Counter.calls += 1
        u = toy_denoised(x, sigma, mu_u)
    if capture is not None:
        capture["uncond"] = u
    if kind == "cfg":
        return u + (c - u) * scale
    if kind == "renorm":
        if sigma < guidance["trunc"]:
            half = u + scale * (c - u)
            if guidance["renorm"] > 0:
                dims = tuple(range(1, x.ndim))
                n_c = torch.linalg.vector_norm(c, dim=dims, keepdim=True)
                mx = n_c * guidance["renorm"]
                n_h = torch.linalg.vector_norm(half, dim=dims, keepdim=True)
                # Per sample (ComfyUI's Python `if` only works for batch size 1).
                half = torch.where(n_h >= mx, half * (mx / n_h), half)
        else:
            half = c
        res = x - half
        return x - res
    if kind == "zero_star":
        out = u + (c - u) * scale
        b = x.shape[0]
        pos, neg = (x - c).reshape(b, -1), (x - u).reshape(b, -1)
        alpha = (torch.sum(pos * neg, dim=1, keepdim=True) / (torch.sum(neg ** 2, dim=1, keepdim=True) + 1e-8))
        alpha = alpha.reshape([b] + [1] * (x.ndim - 1))
        return out + u * (alpha - 1.0) + scale * u * (1.0 - alpha)
    if kind == "diffusers":
        if skip_uncond:
            return c
        s = torch.tensor(sigma, dtype=F32)
        v_c, v_u = (x - c) / s, (x - u) / s
        v = v_u + scale * (v_c - v_u)
        if guidance["normalization"]:
            v = v * (torch.linalg.vector_norm(v_c, dim=-1, keepdim=True) / torch.linalg.vector_norm(v, dim=-1, keepdim=True))
        return x - v * s
    raise ValueError(kind)


# ---------------------------------------------------------------- samplers (comfy/k_diffusion/sampling.py)
def t32(v):
    return torch.tensor(v, dtype=F32)


def to_d(x, sigma, den):
    return (x - den) / sigma


def ancestral_step(sf, st, eta):
    if not eta:
        return st, t32(0.0)
    su = torch.minimum(st, eta * (st ** 2 * (sf ** 2 - st ** 2) / sf ** 2) ** 0.5)
    sd = (st ** 2 - su ** 2) ** 0.5
    return sd, su


def run_sampler(name, x, sigmas, model, noise, eta=None, s_noise=1.0):
    """Returns the states after every step. `model(x, sigma, i, capture)` is the guided denoiser."""
    states = [x]
    sigmas = sigmas.to(F32)
    n = len(sigmas) - 1
    if name == "euler":
        for i in range(n):
            den = model(x, sigmas[i], i, None)
            d = to_d(x, sigmas[i], den)
            x = x + d * (sigmas[i + 1] - sigmas[i])
            states.append(x)
    elif name == "euler_ancestral":
        eta = 1.0 if eta is None else eta
        for i in range(n):
            den = model(x, sigmas[i], i, None)
            if sigmas[i + 1] == 0:
                x = den
            else:
                ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
                sd = sigmas[i + 1] * ratio
                a_next, a_d = 1 - sigmas[i + 1], 1 - sd
                renoise = (sigmas[i + 1] ** 2 - sd ** 2 * a_next ** 2 / a_d ** 2) ** 0.5
                q = sd / sigmas[i]
                x = q * x + (1 - q) * den
                if eta > 0:
                    x = (a_next / a_d) * x + noise(x) * s_noise * renoise
            states.append(x)
    elif name.startswith("res_multistep"):
        cfg_pp = name.endswith("cfg_pp")
        eta = (1.0 if "ancestral" in name else 0.0) if eta is None else eta
        old_den, old_sd = None, None
        for i in range(n):
            cap = {}
            den = model(x, sigmas[i], i, cap)
            uc = cap["uncond"]
            sd, su = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            if sd == 0 or old_den is None:
                if cfg_pp:
                    d = to_d(x, sigmas[i], uc)
                    x = den + d * sd
                else:
                    x = x + to_d(x, sigmas[i], den) * (sd - sigmas[i])
            else:
                tf = lambda s: s.log().neg()
                t, t_old, t_next, t_prev = tf(sigmas[i]), tf(old_sd), tf(sd), tf(sigmas[i - 1])
                h = t_next - t
                c2 = (t_prev - t_old) / h
                phi1 = lambda z: torch.expm1(z) / z
                phi2 = lambda z: (phi1(z) - 1.0) / z
                p1, p2 = phi1(-h), phi2(-h)
                b1 = torch.nan_to_num(p1 - p2 / c2, nan=0.0)
                b2 = torch.nan_to_num(p2 / c2, nan=0.0)
                if cfg_pp:
                    x = x + (den - uc)
                    x = (-h).exp() * x + h * (b1 * uc + b2 * old_den)
                else:
                    x = (-h).exp() * x + h * (b1 * den + b2 * old_den)
            if sigmas[i + 1] > 0 and eta > 0:
                x = x + noise(x) * s_noise * su
            old_den = uc if cfg_pp else den
            old_sd = sd
            states.append(x)
    elif name == "dpmpp_2m":
        old = None
        for i in range(n):
            den = model(x, sigmas[i], i, None)
            t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
            h = t_next - t
            ratio = t_next.neg().exp() / t.neg().exp()
            if old is None or sigmas[i + 1] == 0:
                x = ratio * x - (-h).expm1() * den
            else:
                h_last = t - sigmas[i - 1].log().neg()
                r = h_last / h
                den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                x = ratio * x - (-h).expm1() * den_d
            old = den
            states.append(x)
    elif name == "heun":
        for i in range(n):
            den = model(x, sigmas[i], i, None)
            d = to_d(x, sigmas[i], den)
            dt = sigmas[i + 1] - sigmas[i]
            if sigmas[i + 1] == 0:
                x = x + d * dt
            else:
                x2 = x + d * dt
                den2 = model(x2, sigmas[i + 1], i, None)
                d2 = to_d(x2, sigmas[i + 1], den2)
                x = x + ((d + d2) / 2) * dt
            states.append(x)
    else:
        raise ValueError(name)
    return torch.stack(states)


def main():
    torch.set_num_threads(1)
    # Sigma tables.
    for shift in (6.0, 1.73, 1.0):
        tensors[f"table/shift{shift}"] = FlowSampling(shift).sigmas
    tensors["table/shift6.0/mult1000"] = FlowSampling(6.0, 1000.0).sigmas

    # Schedules.
    for shift in (6.0, 1.0):
        ms = FlowSampling(shift)
        for name in SCHEDULERS:
            for steps in (1, 2, 4, 9, 30, 47):
                if name == "kl_optimal" and steps == 1:
                    continue  # division by zero in ComfyUI too
                tensors[f"schedule/{name}/shift{shift}/steps{steps}"] = calculate_sigmas(ms, name, steps).to(F32)
            for denoise in (0.6, 0.35):
                tensors[f"schedule/{name}/shift{shift}/steps30/denoise{denoise}"] = calculate_sigmas(ms, name, 30, denoise).to(F32)

    # torch CPU randn, as ComfyUI's prepare_noise draws it.
    for seed in (0, 1, 42, 123456789, 2**32 + 5, 18446744073709551615):
        for n in (16, 17, 31, 100, 1024, 16 * 13 * 11):
            g = torch.manual_seed(seed)
            tensors[f"noise/seed{seed}/n{n}"] = torch.randn(n, dtype=F32, generator=g)
    for seed in (0, 7):
        g = torch.manual_seed(seed)
        tensors[f"noise/seed{seed}/sequence"] = torch.stack([torch.randn(1024, dtype=F32, generator=g) for _ in range(3)])
    tensors["noise/seed3/n16384"] = torch.randn(16384, generator=torch.manual_seed(3))
    for seed in (0, 5):
        for n in (1, 5, 15):
            tensors[f"noise/seed{seed}/n{n}"] = torch.randn(n, dtype=F32, generator=torch.manual_seed(seed))
    # Fewer than 16 elements take the cached double Box-Muller; its spare value carries over.
    g = torch.manual_seed(9)
    tensors["noise/seed9/mixed"] = torch.cat([torch.randn(n, dtype=F32, generator=g) for n in (3, 3, 20, 1, 16)])
    # The scalar (libm) kernel that torch runs without AVX2 (and on ARM): ask a child process for it.
    if os.environ.get("ATEN_CPU_CAPABILITY") != "default":
        import subprocess, sys
        code = ("import torch,sys; torch.save({s: torch.randn(4099, generator=torch.manual_seed(s)) for s in (0, 42)}, sys.argv[1])")
        path = OUT + ".scalar.pt"
        subprocess.run([sys.executable, "-c", code, path], check=True, env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
        for s_, v in torch.load(path).items():
            tensors[f"noise_scalar/seed{s_}/n4099"] = v
        os.remove(path)
    tensors["meta/cpu_capability"] = torch.tensor([ord(c) for c in torch.backends.cpu.get_cpu_capability()], dtype=torch.uint8)

    # Sampler trajectories against the toy denoiser.
    shape = (2, 4, 6, 5)
    gen = torch.Generator().manual_seed(11)
    mu_c = torch.randn(shape, generator=gen, dtype=F32) * 0.7 + 0.3
    mu_u = torch.randn(shape, generator=gen, dtype=F32) * 0.7 - 0.2
    latent = torch.randn(shape, generator=gen, dtype=F32)
    tensors["toy/mu_cond"], tensors["toy/mu_uncond"], tensors["toy/latent"] = mu_c, mu_u, latent
    seed = 2024
    init_noise = torch.randn(shape, generator=torch.manual_seed(seed), dtype=F32)
    tensors["toy/noise"] = init_noise

    ms = FlowSampling(6.0)
    cases = []
    cfg = {"kind": "cfg", "scale": 4.5}
    for sampler in ("euler", "euler_ancestral", "res_multistep", "res_multistep_ancestral", "res_multistep_cfg_pp",
                    "res_multistep_ancestral_cfg_pp", "dpmpp_2m", "heun"):
        cases.append((sampler, "cfg4.5", cfg, "linear_quadratic", 8, 1.0))
    cases += [
        ("euler", "cfg1", {"kind": "cfg", "scale": 1.0}, "simple", 6, 1.0),
        ("euler", "renorm", {"kind": "renorm", "scale": 5.0, "trunc": 0.5, "renorm": 1.0}, "linear_quadratic", 8, 1.0),
        ("euler", "zero_star", {"kind": "zero_star", "scale": 4.0}, "linear_quadratic", 8, 1.0),
        ("euler", "diffusers", {"kind": "diffusers", "scale": 4.0, "normalization": True, "trunc_ratio": 0.5}, "simple", 8, 1.0),
        ("euler_ancestral", "cfg4.5_img2img", cfg, "linear_quadratic", 8, 0.6),
        ("res_multistep", "cfg4.5_karras", cfg, "karras", 7, 1.0),
        ("euler_ancestral", "cfg4.5_eta0.5_snoise0.9", cfg, "linear_quadratic", 8, 1.0),
        ("res_multistep_ancestral", "cfg4.5_eta0.5_snoise0.9", cfg, "linear_quadratic", 8, 1.0),
    ]
    for sampler, gname, guidance, scheduler, steps, denoise in cases:
        eta, s_noise = (0.5, 0.9) if "eta0.5" in gname else (None, 1.0)
        sigmas = calculate_sigmas(ms, scheduler, steps, denoise).to(F32)
        cfg_pp = sampler.endswith("cfg_pp")
        model = lambda x, s, i, cap, g=guidance, n=len(sigmas) - 1, pp=cfg_pp: guided(
            x, float(s), i, n, mu_c, mu_u, g, disable_cfg1=pp, capture=cap)
        noise_gen = torch.manual_seed(seed)  # ComfyUI-on-CPU: a fresh generator with the same seed
        noise = lambda x, g=noise_gen: torch.randn(x.shape, dtype=F32, generator=g)
        start = latent if denoise < 1.0 else torch.zeros(shape)
        x = sigmas[0] * init_noise + (1 - sigmas[0]) * start
        Counter.calls = 0
        traj = run_sampler(sampler, x, sigmas, model, noise, eta=eta, s_noise=s_noise)
        key = f"trajectory/{sampler}/{gname}"
        tensors[key] = traj.contiguous()
        tensors[key + "/sigmas"] = sigmas
        tensors[key + "/calls"] = torch.tensor([Counter.calls], dtype=torch.int64)

    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT,
              metadata={"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__})
    print(f"wrote {len(tensors)} tensors to {os.path.normpath(OUT)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
