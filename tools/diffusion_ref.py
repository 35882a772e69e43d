"""Float64 reference for improved-diffusion's Gaussian-diffusion pieces (numpy + torch).

Library module used by tools/make_vlb_ref.py and tools/make_reference_learned_sigma.py
(it writes nothing itself). Written from the formulas of Nichol & Dhariwal,
"Improved Denoising Diffusion Probabilistic Models" (improved-diffusion's
gaussian_diffusion.py / losses.py / respace.py semantics), independently of the C code.

Conventions:
  * Schedule arrays are numpy float64 (T,) arrays, exactly those written to
    tests/ref/schedule.safetensors (betas_for/derived come from make_schedule_ref.py).
  * Element-wise math takes torch tensors (float64 recommended, so autograd gives
    float64 derivatives); numpy inputs are converted to float64 tensors.
  * `t` is a per-sample integer timestep (python int, sequence or tensor of shape (B,));
    per-timestep coefficients are broadcast over all non-batch dimensions.
  * "bits/dim" terms are the mean over all non-batch dimensions divided by ln 2.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_schedule_ref import betas_for, derived  # noqa: E402,F401  (re-exported)

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- schedule
class Diffusion:
    """The improved-diffusion GaussianDiffusion arrays for a beta schedule (float64)."""

    def __init__(self, betas):
        betas = np.asarray(betas, dtype=np.float64)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = len(betas)
        for k, v in derived(betas).items():
            setattr(self, k, v)
        self.log_betas = np.log(betas)
        # "fixedlarge" model variance: beta_t, except posterior_variance[1] at t == 0
        # (so that the decoder's log variance is finite and not too large).
        self.fixedlarge_variance = np.append(self.posterior_variance[1], betas[1:])
        self.fixedlarge_log_variance = np.log(self.fixedlarge_variance)

    @classmethod
    def named(cls, schedule, T):
        return cls(betas_for(schedule, T))


def as_f64(x):
    if isinstance(x, torch.Tensor):
        return x if x.dtype == torch.float64 else x.double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def extract(arr, t, shape):
    """arr[t] as a float64 tensor broadcastable to `shape` ((B, ...))."""
    t = torch.as_tensor(np.asarray(t, dtype=np.int64).reshape(-1))
    v = torch.as_tensor(np.asarray(arr, dtype=np.float64))[t]
    if v.numel() == 1 and shape[0] != 1:
        v = v.expand(shape[0])
    return v.reshape((shape[0],) + (1,) * (len(shape) - 1))


def q_sample(d, x0, t, noise):
    x0 = as_f64(x0)
    return (extract(d.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(d.sqrt_one_minus_alphas_cumprod, t, x0.shape) * as_f64(noise))


def q_posterior_mean_variance(d, x0, xt, t):
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
    x0, xt = as_f64(x0), as_f64(xt)
    mean = (extract(d.posterior_mean_coef1, t, xt.shape) * x0
            + extract(d.posterior_mean_coef2, t, xt.shape) * xt)
    var = extract(d.posterior_variance, t, xt.shape).expand(xt.shape)
    logvar = extract(d.posterior_log_variance_clipped, t, xt.shape).expand(xt.shape)
    return mean, var, logvar


def predict_xstart_from_eps(d, xt, t, eps):
    xt, eps = as_f64(xt), as_f64(eps)
    return (extract(d.sqrt_recip_alphas_cumprod, t, xt.shape) * xt
            - extract(d.sqrt_recipm1_alphas_cumprod, t, xt.shape) * eps)


def predict_eps_from_xstart(d, xt, t, x0):
    xt, x0 = as_f64(xt), as_f64(x0)
    return ((extract(d.sqrt_recip_alphas_cumprod, t, xt.shape) * xt - x0)
            / extract(d.sqrt_recipm1_alphas_cumprod, t, xt.shape))


def learned_range_log_variance(d, t, v):
    """Model log variance for model_var_type LEARNED_RANGE: v in [-1, 1] interpolates
    (in log space) between the clipped posterior variance (v = -1) and beta_t (v = 1)."""
    v = as_f64(v)
    min_log = extract(d.posterior_log_variance_clipped, t, v.shape)
    max_log = extract(d.log_betas, t, v.shape)
    frac = (v + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def model_log_variance(d, kind, t, shape, v=None):
    """kind: 'fixedsmall' | 'fixedlarge' | 'learned' (learned range, needs v)."""
    if kind == "fixedsmall":
        return extract(d.posterior_log_variance_clipped, t, shape).expand(shape)
    if kind == "fixedlarge":
        return extract(d.fixedlarge_log_variance, t, shape).expand(shape)
    if kind == "learned":
        return learned_range_log_variance(d, t, v)
    raise ValueError(kind)


def p_mean_variance_eps(d, xt, t, eps, kind, v=None, clip_denoised=False):
    """Model mean / log variance / pred_x0 for an eps-predicting model."""
    pred_x0 = predict_xstart_from_eps(d, xt, t, eps)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1.0, 1.0)
    mean, _, _ = q_posterior_mean_variance(d, pred_x0, xt, t)
    logvar = model_log_variance(d, kind, t, mean.shape, v)
    return mean, logvar, pred_x0


# --------------------------------------------------------------------------- losses
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) element-wise, in nats."""
    mean1, logvar1, mean2, logvar2 = map(as_f64, (mean1, logvar1, mean2, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(u):
    """The tanh approximation of the standard normal CDF."""
    u = as_f64(u)
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log P(x's bin) under N(means, exp(log_scales)^2), x on the 256-level grid of
    [-1, 1]: bins are x +- 1/255, the edge bins (x < -0.999, x > 0.999) are open to
    -inf / +inf. Probabilities are clamped at 1e-12 (derivative 0 where clamped)."""
    x, means, log_scales = map(as_f64, (x, means, log_scales))
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min,
                                   torch.log(cdf_delta.clamp(min=1e-12))))


def mean_flat(x):
    return x.mean(dim=tuple(range(1, x.dim())))


def vb_terms_bpd(d, x0, xt, t, model_mean, model_logvar):
    """improved-diffusion _vb_terms_bpd: per sample, in bits/dim, the decoder NLL
    -log p(x0 | x1) where t == 0, else KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)).
    Returns (vb (B,), kl (B,), decoder_nll (B,))."""
    x0, xt = as_f64(x0), as_f64(xt)
    true_mean, _, true_logvar = q_posterior_mean_variance(d, x0, xt, t)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / LN2
    nll = -mean_flat(discretized_gaussian_log_likelihood(
        x0, means=model_mean, log_scales=0.5 * model_logvar)) / LN2
    tt = torch.as_tensor(np.asarray(t, dtype=np.int64).reshape(-1)).expand(xt.shape[0])
    return torch.where(tt == 0, nll, kl), kl, nll


def prior_bpd(d, x0):
    """KL(q(x_{T-1} | x0) || N(0, 1)) per sample, mean over dims / ln 2."""
    x0 = as_f64(x0)
    T = d.num_timesteps
    mean = q_sample(d, x0, [T - 1] * x0.shape[0], torch.zeros_like(x0))
    logvar = extract(d.log_one_minus_alphas_cumprod, [T - 1] * x0.shape[0], x0.shape)
    return mean_flat(normal_kl(mean, logvar.expand(x0.shape), 0.0, 0.0)) / LN2


# --------------------------------------------------------------------------- respacing
def space_timesteps(num_timesteps, section_counts):
    """Set of kept timesteps (improved-diffusion respace.py semantics).

    "ddimN": the first stride i in 1..T-1 with len(range(0, T, i)) == N.
    "a,b,c" (or a list of ints): T is split into len(sections) near-equal
    consecutive parts (the first T % len parts one longer); part k keeps
    section_counts[k] steps evenly spaced by a fractional stride, rounded with
    Python's round() (round half to even).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return set(range(0, num_timesteps, i))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx, all_steps = 0, []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx, taken = 0.0, []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return set(all_steps)


def respaced_betas(betas, use_timesteps):
    """Betas of the respaced process that keeps `use_timesteps` (sorted order), so
    that its alphas_cumprod equal the original ones at the kept steps.
    Returns (new_betas float64, timestep_map int64)."""
    ac = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    use = set(int(u) for u in use_timesteps)
    last, new_betas, tmap = 1.0, [], []
    for i, a in enumerate(ac):
        if i in use:
            new_betas.append(1.0 - a / last)
            last = a
            tmap.append(i)
    return np.array(new_betas, dtype=np.float64), np.array(tmap, dtype=np.int64)


# --------------------------------------------------------------------------- DDIM
def ddim_coefficients(d, eta):
    """Per-timestep DDIM update coefficients (improved-diffusion ddim_sample):
        x_{t-1} = coef_x0[t] * pred_x0 + coef_eps[t] * eps + sigma[t] * z   (z only for t > 0)
    with eps = (sqrt_recip_ac[t] * x_t - pred_x0) / sqrt_recipm1_ac[t],
    sigma = eta * sqrt((1 - ac_prev)/(1 - ac)) * sqrt(1 - ac/ac_prev),
    coef_x0 = sqrt(ac_prev), coef_eps = sqrt(1 - ac_prev - sigma^2).
    Returns dict of float64 (T,) arrays sigma, coef_x0, coef_eps."""
    ac, acp = d.alphas_cumprod, d.alphas_cumprod_prev
    sigma = eta * np.sqrt((1.0 - acp) / (1.0 - ac)) * np.sqrt(1.0 - ac / acp)
    return {"sigma": sigma, "coef_x0": np.sqrt(acp),
            "coef_eps": np.sqrt(np.maximum(1.0 - acp - sigma ** 2, 0.0))}


def ddim_step_mean(d, xt, t, pred_x0, eta):
    """The deterministic part of one DDIM step (add sigma[t] * z for t > 0)."""
    c = ddim_coefficients(d, eta)
    eps = predict_eps_from_xstart(d, xt, t, pred_x0)
    shape = as_f64(xt).shape
    return extract(c["coef_x0"], t, shape) * as_f64(pred_x0) + extract(c["coef_eps"], t, shape) * eps
