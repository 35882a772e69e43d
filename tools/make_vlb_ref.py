"""Write tests/ref/vlb.safetensors: float64 reference values for the variational bound.

Regenerate with:  /usr/bin/python3 tools/make_vlb_ref.py
(Debian's PyTorch 1.13 + numpy; the `python3` on PATH has no torch.)

Everything is computed in float64 by tools/diffusion_ref.py (improved-diffusion
semantics), derivatives by torch float64 autograd, with fixed seeds, so the
file is reproducible. The metadata "description" explains every tensor name;
"cases" (JSON) lists the case parameters. Besides what the brief asked for it
holds an extra respacing case (1000, "25") where Python's round-half-to-even
matters, the respaced ddim50 betas and DDIM coefficients.
Self-checks (run on every regeneration): round-trip through st_io; vb
gradients vs central differences; dgll values and derivatives vs a 50-digit
mpmath evaluation (skipped if mpmath is missing); the 256 decoder bins summing
to probability 1; normal_kl vs torch.distributions; respaced alphas_cumprod
equal to the kept originals; DDIM eta=1 sigma^2 equal to the posterior variance.
Runs in about 2 s.
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
import diffusion_ref as dr  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "vlb.safetensors")

POSTERIOR_T = [0, 1, 2, 500, 999]
VB_T = [0, 1, 25, 49]
VB_SHAPE = (2, 4, 4, 3)  # NHWC
VB_KINDS = ["fixedsmall", "fixedlarge", "learned"]
# (1000, "25") is extra: its stride 999/24 = 41.625 hits k + 0.5 at 166.5 and 832.5, where
# round-half-to-even (166, 832) differs from round-half-up (167, 833).
RESPACE = [(1000, "10"), (1000, "ddim50"), (1000, "10,10,20"), (4000, "ddim25"), (1000, "25")]


def grid(gen, shape):
    """Random values on the 256-level data grid k/127.5 - 1."""
    k = torch.randint(0, 256, shape, generator=gen, dtype=torch.int64)
    return k.double() / 127.5 - 1.0


def uniform(gen, shape, lo, hi):
    return torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def space_name(spec):
    return "ddim" + spec[4:] if spec.startswith("ddim") else "s" + spec.replace(",", "_")


def fd_check(f, x, analytic, tol=1e-5):
    """Central differences of sum(f(x)) vs the autograd gradient (spot check on every
    ~16th element; the best of a few step sizes, to dodge both truncation and rounding)."""
    x = x.detach()
    flat = x.reshape(-1)
    for i in range(0, x.numel(), max(1, x.numel() // 16)):
        a = float(analytic.reshape(-1)[i])
        err = math.inf
        for h in (1e-5, 1e-6, 1e-7):
            xp, xm = flat.clone(), flat.clone()
            xp[i] += h
            xm[i] -= h
            num = float((f(xp.reshape(x.shape)) - f(xm.reshape(x.shape))).sum() / (2 * h))
            err = min(err, abs(num - a))
        assert err <= tol * (1 + abs(a)), (i, err, a)


def mp_check_dgll(x, means, ls, out, dm, dls):
    """Check dgll values and autograd derivatives against a 50-digit mpmath evaluation of
    the same formula (finite differences are useless in the far tails, where 1 + tanh
    cancels and even float64 keeps only ~6 digits of a 1e-10 bin probability).
    Returns the largest relative error of (out, dmeans, dlog_scales)."""
    try:
        import mpmath as mp
    except ImportError:
        print("mpmath not available: skipping the high-precision dgll check")
        return None
    mp.mp.dps = 50
    c = mp.sqrt(2 / mp.pi)

    def cdf(u):
        return (1 + mp.tanh(c * (u + mp.mpf("0.044715") * u ** 3))) / 2

    def prob(xi, mu, s):
        inv = mp.exp(-s)
        plus, minus = cdf(inv * (xi - mu + mp.mpf(1) / 255)), cdf(inv * (xi - mu - mp.mpf(1) / 255))
        return plus if xi < -0.999 else (1 - minus if xi > 0.999 else plus - minus)

    worst = [0.0, 0.0, 0.0]
    for i in range(len(x)):
        xi, mu, s = mp.mpf(float(x[i])), mp.mpf(float(means[i])), mp.mpf(float(ls[i]))
        p = prob(xi, mu, s)
        if p < mp.mpf("1e-11"):  # clamped (or at the clamp's edge): value log(1e-12), slope 0
            if p < mp.mpf("1e-13"):
                assert float(out[i]) == math.log(1e-12) and dm[i] == 0 and dls[i] == 0, i
            continue
        ref = [mp.log(p), mp.diff(lambda m_: mp.log(prob(xi, m_, s)), mu),
               mp.diff(lambda s_: mp.log(prob(xi, mu, s_)), s)]
        for j, got in enumerate([out[i], dm[i], dls[i]]):
            r = abs(float(got) - float(ref[j])) / max(abs(float(ref[j])), 1e-3)
            worst[j] = max(worst[j], r)
    assert max(worst) < 1e-4, worst
    return worst


def main():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(20240607)
    T_ = {}   # tensors
    desc = []  # (name pattern, explanation)

    # 1. normal_kl ---------------------------------------------------------------
    n = 64
    m1 = torch.randn(n, generator=gen, dtype=torch.float64) * 1.5
    m2 = torch.randn(n, generator=gen, dtype=torch.float64) * 1.5
    lv1 = uniform(gen, (n,), -6.0, 2.0)
    lv2 = uniform(gen, (n,), -6.0, 2.0)
    kl = dr.normal_kl(m1, lv1, m2, lv2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, torch.exp(0.5 * lv1)),
        torch.distributions.Normal(m2, torch.exp(0.5 * lv2)))
    assert torch.allclose(kl, ref, rtol=1e-10, atol=1e-12)
    T_.update({"normal_kl.mean1": m1, "normal_kl.logvar1": lv1, "normal_kl.mean2": m2,
               "normal_kl.logvar2": lv2, "normal_kl.out": kl})
    desc.append(("normal_kl.{mean1,logvar1,mean2,logvar2,out} (64,)",
                 "out = KL(N(mean1,e^logvar1)||N(mean2,e^logvar2)) in nats = 0.5*(-1 + logvar2 "
                 "- logvar1 + exp(logvar1-logvar2) + (mean1-mean2)^2*exp(-logvar2))"))

    # 2. discretized Gaussian log-likelihood ---------------------------------------
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # includes -1 and 1 exactly
    means = uniform(gen, (256,), -1.2, 1.2)
    ls = uniform(gen, (256,), -6.0, 0.0)
    # A few cases near the data so that interior bins are not all clamped.
    near = torch.arange(0, 256, 4)
    means[near] = x[near] + torch.randn(len(near), generator=gen, dtype=torch.float64) * 0.05
    means_r, ls_r = means.clone().requires_grad_(True), ls.clone().requires_grad_(True)
    out = dr.discretized_gaussian_log_likelihood(x, means_r, ls_r)
    dm, dls = torch.autograd.grad(out.sum(), [means_r, ls_r])
    dgll_err = mp_check_dgll(x, means, ls, out.detach(), dm, dls)
    # The 256 bins of one Gaussian telescope to total probability 1.
    for mu, s in [(0.1, -2.0), (-0.7, -4.0), (0.95, -1.0)]:
        p = torch.exp(dr.discretized_gaussian_log_likelihood(x, torch.full_like(x, mu),
                                                             torch.full_like(x, s)))
        assert abs(float(p.sum()) - 1.0) < 1e-9, float(p.sum())
    n_clamped = int((out.detach() <= math.log(1e-12) + 1e-9).sum())
    T_.update({"dgll.x": x, "dgll.means": means, "dgll.log_scales": ls, "dgll.out": out.detach(),
               "dgll.dmeans": dm, "dgll.dlog_scales": dls})
    desc.append(("dgll.{x,means,log_scales,out,dmeans,dlog_scales} (256,)",
                 "discretized_gaussian_log_likelihood: x = k/127.5-1 for k = 0..255 (x[0] = -1 "
                 "and x[255] = 1 use the open edge bins log cdf_plus and log(1-cdf_min)); "
                 "means uniform in [-1.2,1.2] except every 4th case (k mod 4 == 0) which is "
                 "x + N(0, 0.05^2); log_scales uniform in [-6,0]; out = log probability of x's "
                 "bin (x +- 1/255) under N(means, exp(log_scales)^2) with the tanh CDF, "
                 "probabilities clamped at 1e-12; dmeans, dlog_scales = d out / d means, "
                 "d out / d log_scales (0 where the clamp is active; %d cases are clamped)"
                 % n_clamped))

    # 3a. q posterior (linear, T=1000) ---------------------------------------------
    d1000 = dr.Diffusion.named("linear", 1000)
    x0 = grid(gen, (len(POSTERIOR_T), 16))
    noise = torch.randn(len(POSTERIOR_T), 16, generator=gen, dtype=torch.float64)
    xt = dr.q_sample(d1000, x0, POSTERIOR_T, noise)
    pm, pv, plv = dr.q_posterior_mean_variance(d1000, x0, xt, POSTERIOR_T)
    T_.update({"posterior.x0": x0, "posterior.xt": xt,
               "posterior.t": np.array(POSTERIOR_T, dtype=np.int32), "posterior.mean": pm,
               "posterior.var": pv[:, 0], "posterior.logvar": plv[:, 0]})
    desc.append(("posterior.{x0,xt (5,16), t (5,) I32, mean (5,16), var (5,), logvar (5,)}",
                 "q(x_{t-1}|x_t,x_0) for linear T=1000, row i at t[i] in {0,1,2,500,999}: "
                 "mean = posterior_mean_coef1[t]*x0 + posterior_mean_coef2[t]*xt; var = "
                 "posterior_variance[t] (0 at t=0); logvar = posterior_log_variance_clipped[t] "
                 "(log posterior_variance[1] at t=0). x0 on the 256-level grid, xt = q_sample"))

    # 3b. vb terms (linear, T=50) ----------------------------------------------------
    d50 = dr.Diffusion.named("linear", 50)
    for t in VB_T:
        x0 = grid(gen, VB_SHAPE)
        noise = torch.randn(VB_SHAPE, generator=gen, dtype=torch.float64)
        xt = dr.q_sample(d50, x0, t, noise)
        eps = noise + 0.3 * torch.randn(VB_SHAPE, generator=gen, dtype=torch.float64)
        v = uniform(gen, VB_SHAPE, -1.0, 1.0)
        T_.update({f"vb.t{t}.x0": x0, f"vb.t{t}.x_t": xt, f"vb.t{t}.eps": eps, f"vb.t{t}.v": v})
        for kind in VB_KINDS:
            def vb_of(e, vv, kind=kind, x0=x0, xt=xt, t=t):
                mean, logvar, _ = dr.p_mean_variance_eps(d50, xt, t, e, kind, vv)
                return dr.vb_terms_bpd(d50, x0, xt, t, mean, logvar)[0]
            e_r, v_r = eps.clone().requires_grad_(True), v.clone().requires_grad_(True)
            vb = vb_of(e_r, v_r)
            if kind == "learned":
                de, dv = torch.autograd.grad(vb.sum(), [e_r, v_r])
                fd_check(lambda vv: vb_of(eps, vv), v, dv)
            else:
                (de,) = torch.autograd.grad(vb.sum(), [e_r])
            fd_check(lambda e: vb_of(e, v), eps, de)
            T_[f"vb.{kind}.t{t}.vb"] = vb.detach()
            T_[f"vb.{kind}.t{t}.d_eps"] = de
            if kind == "learned":
                T_[f"vb.{kind}.t{t}.d_v"] = dv
    desc.append(("vb.t{t}.{x0,x_t,eps,v} (2,4,4,3) NHWC, t in {0,1,25,49}",
                 "inputs for linear T=50 (betas linspace(1e-4*1000/50, 0.02*1000/50, 50)), both "
                 "samples at timestep t: x0 on the 256-level grid, x_t = sqrt(ac[t])*x0 + "
                 "sqrt(1-ac[t])*noise, eps = model eps output (noise + 0.3*N(0,1)), v = model "
                 "variance output uniform in [-1,1]"))
    desc.append(("vb.{fixedsmall,fixedlarge,learned}.t{t}.vb (2,)",
                 "per-sample _vb_terms_bpd in bits/dim: model mean = posterior mean of pred_x0 = "
                 "sqrt_recip_ac[t]*x_t - sqrt_recipm1_ac[t]*eps (not clipped); model log variance "
                 "fixedsmall = posterior_log_variance_clipped[t], fixedlarge = "
                 "log(append(posterior_variance[1], betas[1:]))[t], learned (range) = frac*log(betas[t]) "
                 "+ (1-frac)*posterior_log_variance_clipped[t] with frac = (v+1)/2; at t == 0 the "
                 "decoder NLL -mean(dgll(x0, mean, 0.5*logvar))/ln2, else mean(normal_kl(true "
                 "posterior mean, true clipped logvar, model mean, model logvar))/ln2"))
    desc.append(("vb.{kind}.t{t}.d_eps (2,4,4,3), vb.learned.t{t}.d_v (2,4,4,3)",
                 "d vb / d eps and d vb / d v (autograd; samples are independent, so slice s is "
                 "the gradient of vb[s]); d_v is stored only for learned (the fixed kinds do not "
                 "depend on v)"))

    # 4. prior bpd -----------------------------------------------------------------------
    x0 = grid(gen, (4, 8, 8, 3))
    prior = dr.prior_bpd(d1000, x0)
    T_.update({"prior.x0": x0, "prior.out": prior})
    desc.append(("prior.{x0 (4,8,8,3), out (4,)}",
                 "prior bpd for linear T=1000: mean over dims of KL(N(sqrt(ac[T-1])*x0, "
                 "1-ac[T-1]) || N(0,1)) / ln 2; x0 on the 256-level grid"))

    # 5. respacing + DDIM ---------------------------------------------------------------
    for Tn, spec in RESPACE:
        steps = sorted(dr.space_timesteps(Tn, spec))
        T_[f"respace.T{Tn}.{space_name(spec)}"] = np.array(steps, dtype=np.int64)
    assert T_["respace.T1000.s10"].tolist() == list(range(0, 1000, 111))
    assert T_["respace.T1000.ddim50"].tolist() == list(range(0, 1000, 20))
    assert T_["respace.T4000.ddim25"].tolist() == list(range(0, 4000, 160))
    assert len(T_["respace.T1000.s10_10_20"]) == 40
    s25 = T_["respace.T1000.s25"].tolist()
    assert len(s25) == 25 and 166 in s25 and 832 in s25 and 167 not in s25
    desc.append(("respace.T{T}.{s10, ddim50, s10_10_20, ddim25, s25} I64",
                 "sorted space_timesteps(T, spec) for (1000,'10'), (1000,'ddim50'), "
                 "(1000,'10,10,20'), (4000,'ddim25'), (1000,'25') (improved-diffusion respace.py): 'ddimN' = "
                 "range(0,T,i) for the first stride i in 1..T-1 giving N steps; otherwise T is split "
                 "into len(sections) parts of T//len (+1 for the first T%len parts) and part k "
                 "keeps start_k + round(j*frac_stride), frac_stride = (size-1)/(count-1) (1 if "
                 "count <= 1), j = 0..count-1. NOTE: round() is Python's round half to even "
                 "(banker's rounding: round(0.5) = 0, round(2.5) = 2), the C side must match: T1000.s25 "
                 "keeps 166 and 832 (cur_idx 166.5, 832.5) where round-half-up gives 167, 833; "
                 "cur_idx is accumulated by repeated double addition of frac_stride"))
    for spec in ["10,10,20", "ddim50"]:
        nb, tmap = dr.respaced_betas(d1000.betas, dr.space_timesteps(1000, spec))
        assert np.allclose(np.cumprod(1.0 - nb), d1000.alphas_cumprod[tmap], rtol=1e-12, atol=0)
        assert (tmap == T_[f"respace.T1000.{space_name(spec)}"]).all()
        T_[f"respace.linear.T1000.{space_name(spec)}.betas"] = nb
    desc.append(("respace.linear.T1000.{s10_10_20, ddim50}.betas F64",
                 "respaced betas for linear T=1000: last = 1; for i, ac in enumerate(alphas_cumprod): "
                 "if i kept: new_beta = 1 - ac/last; last = ac (the respaced model is called with "
                 "the original timestep respace.T1000.<spec>[k] for new index k)"))
    dd = dr.Diffusion(T_["respace.linear.T1000.ddim50.betas"])
    for eta in [0.0, 1.0]:
        c = dr.ddim_coefficients(dd, eta)
        if eta == 1.0:
            assert np.allclose(c["sigma"] ** 2, dd.posterior_variance, rtol=1e-10, atol=1e-300)
        else:
            assert (c["sigma"] == 0).all()
        for k in ["sigma", "coef_x0", "coef_eps"]:
            T_[f"ddim.linear.T1000.ddim50.eta{int(eta)}.{k}"] = c[k]
    desc.append(("ddim.linear.T1000.ddim50.eta{0,1}.{sigma,coef_x0,coef_eps} (50,)",
                 "DDIM coefficients on the ddim50-respaced linear T=1000 schedule (index = "
                 "respaced step): x_{t-1} = coef_x0*pred_x0 + coef_eps*eps + sigma*z (z only for "
                 "t > 0), eps = (sqrt_recip_ac[t]*x_t - pred_x0)/sqrt_recipm1_ac[t]; sigma = "
                 "eta*sqrt((1-ac_prev)/(1-ac))*sqrt(1-ac/ac_prev), coef_x0 = sqrt(ac_prev), "
                 "coef_eps = sqrt(1-ac_prev-sigma^2)"))

    # write -------------------------------------------------------------------------------
    tensors = {}
    for k, val in T_.items():
        a = val.detach().numpy() if isinstance(val, torch.Tensor) else np.asarray(val)
        if a.dtype.kind == "f":
            assert a.dtype == np.float64, k
            assert np.isfinite(a).all(), k
        tensors[k] = a
    cases = {"normal_kl_n": 64, "dgll_n": 256, "posterior_t": POSTERIOR_T,
             "posterior_schedule": "linear", "posterior_timesteps": 1000,
             "vb_t": VB_T, "vb_shape_nhwc": list(VB_SHAPE), "vb_kinds": VB_KINDS,
             "vb_schedule": "linear", "vb_timesteps": 50, "prior_schedule": "linear",
             "prior_timesteps": 1000, "respace": [[Tn, s] for Tn, s in RESPACE],
             "rounding": "python round(): half to even"}
    meta = {"description": "Float64 variational-bound reference (tools/make_vlb_ref.py, "
                           "improved-diffusion semantics; ac = alphas_cumprod). "
                           + " | ".join(f"{n}: {e}" for n, e in desc),
            "cases": json.dumps(cases)}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)

    back, bmeta = st_io.read(OUT)  # self-check: round-trip
    assert bmeta == meta and list(back) == list(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and (back[k] == v).all(), k
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")
    print(f"dgll: {n_clamped}/256 cases clamped at 1e-12; max rel err vs mpmath "
          f"(out, dmeans, dlog_scales): {dgll_err}")
    for t in VB_T:
        print(f"t={t:2d} vb fixedsmall {back[f'vb.fixedsmall.t{t}.vb']} fixedlarge "
              f"{back[f'vb.fixedlarge.t{t}.vb']} learned {back[f'vb.learned.t{t}.vb']}")
    print("prior bpd:", back["prior.out"])
    print("respace 10,10,20:", back["respace.T1000.s10_10_20"].tolist())


if __name__ == "__main__":
    main()
