"""Write tests/ref/schedule.safetensors: DDPM noise-schedule reference arrays.

Regenerate with:  /usr/bin/python3 tools/make_schedule_ref.py

Computed in numpy float64, independently of the C code. For each schedule
S in linear, cosine, quadratic, sigmoid and T in 1000, 50 the file holds
F64 (T,) tensors "{S}.T{T}.{array}" for the arrays listed in ARRAYS
(the betas plus improved-diffusion's GaussianDiffusion derived arrays).
The linear/quadratic/sigmoid endpoints are scaled by 1000/T so that short
schedules keep the same total amount of noise.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "schedule.safetensors")

SCHEDULES = ["linear", "cosine", "quadratic", "sigmoid"]
# The endpoints scale by 1000/T, so beta_end = 20/T: T must exceed 20 for the
# linear/quadratic/sigmoid betas to stay inside (0, 1) (T=10 would give 2.0).
# 50 is the small-T case (beta_end = 0.4).
TIMESTEPS = [1000, 50]
ARRAYS = ["betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev",
          "alphas_cumprod_next", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
          "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
          "sqrt_recipm1_alphas_cumprod", "posterior_variance",
          "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]


def betas_for(name, T):
    scale = 1000.0 / T
    b0, b1 = 1e-4 * scale, 0.02 * scale
    if name == "linear":
        return np.linspace(b0, b1, T, dtype=np.float64)
    if name == "quadratic":
        return np.linspace(np.sqrt(b0), np.sqrt(b1), T, dtype=np.float64) ** 2
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T))) * (b1 - b0) + b0
    if name == "cosine":
        # Nichol & Dhariwal: betas from ratios of alpha_bar, clipped at 0.999
        # to avoid the singularity at u=1.
        def alpha_bar(u):
            return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
        i = np.arange(T, dtype=np.float64)
        return np.minimum(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)
    raise ValueError(name)


def derived(betas):
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    out = {"betas": betas, "alphas": 1.0 - betas, "alphas_cumprod": ac,
           "alphas_cumprod_prev": ac_prev, "alphas_cumprod_next": np.append(ac[1:], 0.0),
           "sqrt_alphas_cumprod": np.sqrt(ac),
           "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
           "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
           "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
           "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0)}
    pv = betas * (1.0 - ac_prev) / (1.0 - ac)
    out["posterior_variance"] = pv
    # pv[0] is 0; improved-diffusion substitutes pv[1] so the log is finite.
    out["posterior_log_variance_clipped"] = np.log(np.append(pv[1], pv[1:]))
    out["posterior_mean_coef1"] = betas * np.sqrt(ac_prev) / (1.0 - ac)
    out["posterior_mean_coef2"] = (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac)
    assert list(out) == ARRAYS
    return out


def main():
    tensors = {}
    for s in SCHEDULES:
        for T in TIMESTEPS:
            for k, v in derived(betas_for(s, T)).items():
                assert v.shape == (T,) and v.dtype == np.float64 and np.isfinite(v).all(), (s, T, k)
                tensors[f"{s}.T{T}.{k}"] = v
    meta = {"arrays": ",".join(ARRAYS), "schedules": ",".join(SCHEDULES),
            "timesteps": ",".join(map(str, TIMESTEPS))}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)

    back, bmeta = st_io.read(OUT)  # self-check: round-trip
    assert bmeta == meta and list(back) == list(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == np.float64 and (back[k] == v).all(), k
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
