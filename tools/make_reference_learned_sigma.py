"""Write tests/ref/unet_learned_sigma.safetensors: PyTorch reference for the ddpm.c
U-Net with a learned (range) variance head, trained with improved-diffusion's
hybrid objective (and, on the same batch, the `kl` objective).

Regenerate with:  /usr/bin/python3 tools/make_reference_learned_sigma.py
(Debian's PyTorch 1.13; the `python3` on PATH has no torch.)

Model: the small config of tests/ref/unet_small.safetensors with out_channels 6; per
pixel the output is [eps (3) | v (3)] in NHWC channel order (NCHW channels 0..2 are
eps, 3..5 are v). Schedule: linear, T = 50 (betas linspace(1e-4*1000/50,
0.02*1000/50, 50)). Batch 2 at t = [0, 37], so both the decoder NLL (t = 0) and the
KL branch (t > 0) of the VLB are exercised.

The network runs in float32 (as in make_reference.py); the loss head
(tools/diffusion_ref.py) runs in float64 on the float32 output, so the
stored losses and gradients carry no float32 rounding from the head itself.

Contents (F32 unless noted; images NHWC, parameters in PyTorch layout):
  input.x0, input.eps, input.x_t (2,8,8,3), input.t (I32, (2,))
  <param>                 perturbed default-init weights (diffusers names)
  output (2,8,8,6)        model(x_t, t)
  loss.mse, loss.vb (2,)  per-sample MSE on eps and VLB term (bits/dim)
  loss (1,)               hybrid loss = mean_s(mse_s + T/1000 * vb_s), vb with a stop-gradient mean
  grad.<param>            d loss / d param
  kl.loss (1,)            mean_s(T * vb_s), no stop-gradient
  kl.grad.<param>         d kl.loss / d param
Metadata: config (JSON), description.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
import diffusion_ref as dr  # noqa: E402
from torch_unet import UNet2DModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "unet_learned_sigma.safetensors")

CONFIG = dict(image_size=8, in_channels=3, out_channels=6, ch=16, ch_mult=[1, 2],
              num_res_blocks=1, attn_resolutions=[4], groups=8, dropout=0.0)
TIMESTEPS = 50
SCHEDULE = "linear"
T_BATCH = [0, 37]
MODEL_KEYS = ["image_size", "in_channels", "out_channels", "ch", "ch_mult", "num_res_blocks",
              "attn_resolutions", "groups", "dropout"]


def nhwc(x):
    return x.detach().permute(0, 2, 3, 1).contiguous()


def losses(d, out, x0, x_t, eps, t, detach_mean):
    """Per-sample (mse, vb) from the NCHW model output (float64 head)."""
    out64 = out.double()
    c = x0.shape[1]
    eps_out, v = out64[:, :c], out64[:, c:]
    mse = dr.mean_flat((eps_out - eps) ** 2)
    mean_eps = eps_out.detach() if detach_mean else eps_out
    mean, logvar, _ = dr.p_mean_variance_eps(d, x_t, t, mean_eps, "learned", v,
                                             clip_denoised=False)
    vb = dr.vb_terms_bpd(d, x0, x_t, t, mean, logvar)[0]
    return mse, vb


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(5150)

    model = UNet2DModel(CONFIG).float()
    # Same kind of perturbation as make_reference.py: default init leaves biases
    # at 0 and norm scales at 1, which would hide dropped-bias / swapped-affine bugs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() == 1 else 0.01))
    model.train()  # dropout is 0
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    print(f"learned-sigma small config parameter count: {sum(p.numel() for p in params)}")

    d = dr.Diffusion.named(SCHEDULE, TIMESTEPS)
    b, s, c = len(T_BATCH), CONFIG["image_size"], CONFIG["in_channels"]
    x0_nhwc = torch.rand(b, s, s, c) * 2.0 - 1.0
    eps_nhwc = torch.randn(b, s, s, c)
    t = torch.tensor(T_BATCH, dtype=torch.int32)
    # x_t from the float32 inputs, evaluated in float64 and rounded once to float32;
    # everything below uses exactly the stored float32 x_t.
    x_t_nhwc = dr.q_sample(d, x0_nhwc, T_BATCH, eps_nhwc).float()

    def nchw(a):
        return a.permute(0, 3, 1, 2).contiguous()

    x0, eps, x_t = nchw(x0_nhwc).double(), nchw(eps_nhwc).double(), nchw(x_t_nhwc)

    out = model(x_t, t)  # float32 NCHW, 6 channels

    mse, vb = losses(d, out, x0, x_t.double(), eps, T_BATCH, detach_mean=True)
    loss = (mse + (TIMESTEPS / 1000.0) * vb).mean()
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    # Sanity: with the stop-gradient, the eps channels see only the MSE gradient.
    (d_out,) = torch.autograd.grad(loss, [out], retain_graph=True)
    n_pix = s * s * c
    mse_only = 2.0 * (out.double()[:, :c] - eps) / (n_pix * b)
    assert torch.allclose(d_out[:, :c].double(), mse_only, rtol=1e-5, atol=1e-9)

    _, vb_kl = losses(d, out, x0, x_t.double(), eps, T_BATCH, detach_mean=False)
    assert torch.equal(vb_kl.detach(), vb.detach())  # the stop-gradient changes no value
    loss_kl = (TIMESTEPS * vb_kl).mean()
    kl_grads = torch.autograd.grad(loss_kl, params)

    print("loss.mse:", mse.tolist(), "loss.vb:", vb.tolist())
    print(f"hybrid loss: {float(loss):.9g}   kl loss: {float(loss_kl):.9g}")

    tensors = {"input.x0": x0_nhwc.numpy(), "input.eps": eps_nhwc.numpy(),
               "input.x_t": x_t_nhwc.numpy(), "input.t": t.numpy()}
    for n, p in zip(names, params):
        tensors[n] = p.detach().numpy()
    tensors["output"] = nhwc(out).numpy()
    tensors["loss.mse"] = mse.detach().float().numpy()
    tensors["loss.vb"] = vb.detach().float().numpy()
    tensors["loss"] = loss.detach().float().reshape(1).numpy()
    for n, g in zip(names, grads):
        tensors["grad." + n] = g.numpy()
    tensors["kl.loss"] = loss_kl.detach().float().reshape(1).numpy()
    for n, g in zip(names, kl_grads):
        tensors["kl.grad." + n] = g.numpy()
    for k, v in tensors.items():
        assert v.dtype == (np.int32 if k == "input.t" else np.float32), k
        assert np.isfinite(v).all(), k

    cfg = dict(CONFIG, timesteps=TIMESTEPS, beta_schedule=SCHEDULE)
    meta = {
        "config": json.dumps(cfg),
        "description":
            "ddpm.c U-Net learned-sigma reference (PyTorch 1.13; network float32, loss head "
            "float64 on the float32 output, stored as F32). Config: the unet_small model with "
            "out_channels 6, per pixel [eps(3) | v(3)] in NHWC channel order; linear schedule "
            "T=50 (betas linspace(1e-4*1000/50, 0.02*1000/50, 50)); batch 2 at t = [0, 37]. "
            "input.x0 (2,8,8,3) uniform in [-1,1]; input.eps (2,8,8,3) N(0,1); input.t I32; "
            "input.x_t = sqrt(ac[t])*x0 + sqrt(1-ac[t])*eps (ac = alphas_cumprod; evaluated in "
            "float64 and rounded to float32; the model and loss use this stored x_t). "
            "<param>: perturbed default-init weights, diffusers names, PyTorch layout. "
            "output (2,8,8,6) NHWC = model(x_t, t). loss.mse (2,): mean over (H,W,3) of "
            "(out_eps - eps)^2. loss.vb (2,): improved-diffusion _vb_terms_bpd in bits/dim with "
            "model mean = posterior mean of pred_x0 = sqrt_recip_ac[t]*x_t - sqrt_recipm1_ac[t]*"
            "out_eps (not clipped) and learned-range log variance frac*log(betas[t]) + "
            "(1-frac)*posterior_log_variance_clipped[t], frac = (out_v+1)/2; the decoder NLL "
            "-mean(dgll(x0, mean, 0.5*logvar))/ln2 at t == 0, else mean(normal_kl(true posterior "
            "mean, posterior_log_variance_clipped[t], mean, logvar))/ln2. loss (1,): hybrid = "
            "mean over samples of mse + (T/1000)*vb, where vb uses out_eps DETACHED for the mean "
            "(the VLB trains only the variance channels). grad.<param> = d loss / d param. "
            "kl.loss (1,) = mean over samples of T*vb with no stop-gradient (its per-sample vb "
            "equals loss.vb); kl.grad.<param> = d kl.loss / d param."}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)

    # Self-check: round-trip through our reader.
    back, bmeta = st_io.read(OUT)
    assert list(back) == list(tensors) and bmeta == meta
    for k, v in tensors.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        assert (back[k] == v).all(), k
    cfg_back = json.loads(bmeta["config"])
    assert cfg_back == cfg and set(MODEL_KEYS) <= set(cfg_back)
    assert back["output"].shape == (b, s, s, CONFIG["out_channels"])
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
