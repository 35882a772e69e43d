"""Write tests/ref/vae_tiny.safetensors: the KL autoencoder against diffusers' own
AutoencoderKL (0.30.3), the layout and names ddpm.c's autoencoder follows.

Regenerate with:  .venv-diffusers/bin/python tools/make_vae_reference.py

A tiny AutoencoderKL (8x8x3 images, block_out_channels (8, 16), layers_per_block 1,
norm_num_groups 4, latent_channels 2), every weight perturbed, run in float64 on one
batch of B=2 with a given posterior eps (z = mean + std * eps, the formula of
DiagonalGaussianDistribution.sample) for two losses, both "summed over the pixels /
latent units, averaged over the batch" as objective=vae defines them:
  l1:   sum |x^ - x| + kl_weight * KL
  l2lv: sum (x^ - x)^2 / exp(logvar) + D*logvar + kl_weight * KL (learned logvar)
Contents (F32; images and latents NHWC, parameters in PyTorch layout):
  input.x, input.eps, <param>, logvar (1)
  <loss>.moments, <loss>.recon, <loss>.loss (1), <loss>.kl (B), <loss>.grad.<param>,
  l2lv.grad.logvar
Metadata: config (ddpm.c keys), kl_weight, description.
"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "vae_tiny.safetensors")

CONFIG = dict(objective="vae", image_size=8, in_channels=3, out_channels=3, ch=8,
              ch_mult=[1, 2], num_res_blocks=1, groups=4, latent_channels=2, dropout=0.0)
KL_WEIGHT = 1.0
LOGVAR = 0.3
B = 2


def nhwc(x):
    return x.detach().permute(0, 2, 3, 1).contiguous().float().numpy()


def build():
    c = CONFIG
    return AutoencoderKL(
        in_channels=c["in_channels"], out_channels=c["out_channels"],
        down_block_types=("DownEncoderBlock2D",) * len(c["ch_mult"]),
        up_block_types=("UpDecoderBlock2D",) * len(c["ch_mult"]),
        block_out_channels=tuple(c["ch"] * m for m in c["ch_mult"]),
        layers_per_block=c["num_res_blocks"], act_fn="silu",
        latent_channels=c["latent_channels"], norm_num_groups=c["groups"],
        sample_size=c["image_size"])


def run(model, x, eps, l1, logvar):
    """Forward and backward of one loss; returns (moments, recon, loss, kl)."""
    model.zero_grad()
    if logvar is not None and logvar.grad is not None:
        logvar.grad = None
    posterior = model.encode(x).latent_dist
    z = posterior.mean + posterior.std * eps
    recon = model.decode(z).sample
    diff = recon - x
    rec = (diff.abs() if l1 else diff * diff).sum(dim=(1, 2, 3))
    if logvar is not None:
        rec = rec / torch.exp(logvar) + diff[0].numel() * logvar
    kl = posterior.kl()
    loss = (rec + KL_WEIGHT * kl).mean()
    loss.backward()
    moments = torch.cat([posterior.mean, posterior.logvar], dim=1)
    return moments, recon, loss, kl


def main():
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    model = build().double()
    # Default init leaves biases at 0 and norm scales at 1, which would hide a dropped
    # bias or swapped gamma/beta: perturb everything.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() == 1 else 0.02))
            p.copy_(p.float().double())   # the weights the engine will hold
    model.train()
    s, ch, lat = CONFIG["image_size"], CONFIG["in_channels"], CONFIG["latent_channels"]
    side = s >> (len(CONFIG["ch_mult"]) - 1)
    x = torch.rand(B, ch, s, s).float().double() * 2 - 1
    eps = torch.randn(B, lat, side, side).float().double()
    logvar = torch.tensor([LOGVAR], dtype=torch.float64, requires_grad=True)

    names = [n for n, _ in model.named_parameters()]
    pdict = dict(model.named_parameters())
    tensors = {"input.x": nhwc(x), "input.eps": nhwc(eps)}
    for n in names:
        tensors[n] = pdict[n].detach().float().numpy()
    tensors["logvar"] = logvar.detach().float().numpy()
    for tag, l1, lv in (("l1", True, None), ("l2lv", False, logvar)):
        moments, recon, loss, kl = run(model, x, eps, l1, lv)
        tensors[tag + ".moments"] = nhwc(moments)
        tensors[tag + ".recon"] = nhwc(recon)
        tensors[tag + ".loss"] = loss.detach().reshape(1).float().numpy()
        tensors[tag + ".kl"] = kl.detach().float().numpy()
        for n in names:
            tensors[tag + ".grad." + n] = pdict[n].grad.float().numpy()
        if lv is not None:
            tensors[tag + ".grad.logvar"] = lv.grad.float().numpy()
        print(f"{tag}: loss {float(loss):.6f}, kl {kl.tolist()}")
    meta = {"config": json.dumps(CONFIG), "kl_weight": repr(KL_WEIGHT),
            "description": "ddpm.c autoencoder reference: diffusers 0.30.3 AutoencoderKL in "
                           "float64, stored as float32; NHWC, params in PyTorch layout"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
