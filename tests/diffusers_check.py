"""Loads a `ddpm export` folder with real diffusers and compares it with the engine.

usage: diffusers_check.py DIR x.npy t.txt y.npy schedule.csv [labels.txt]

x.npy: inputs (N, H, W, C) float32; t.txt: N timesteps; y.npy: `ddpm forward` on them
(N, H, W, C_out); schedule.csv: `ddpm schedule` of the same config; labels.txt: N class
ids for a class-conditional model (UNet2DModel(num_class_embeds=...)). Checks:
- UNet2DModel.from_pretrained, then load_state_dict(strict) of the file's tensors: every
  key and shape fits;
- DDPMPipeline.from_pretrained loads a UNet2DModel and a DDPMScheduler;
- diffusers' U-Net output equals the engine's within 1e-5 relative (max |a-b| / max |b|);
- the scheduler's betas, alphas_cumprod and posterior variances equal `ddpm schedule`'s.
Exits 1 with the failed check named.
"""
import csv
import sys

import numpy as np
# diffusers 0.30 calls safetensors.torch without importing it (accelerate or
# transformers usually do); import it here rather than install either.
import safetensors.torch
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

MODEL_TOL = 1e-5
# diffusers keeps the schedule in float32 (the engine in float64): betas round once,
# the cumulative product accumulates roundings over T steps, and the posterior variance
# divides by 1 - alphas_cumprod, about 1e-4 near t = 0, where float32 keeps ~3 digits.
BETA_TOL = 1e-6
CUMPROD_TOL = 1e-4
VARIANCE_TOL = 2e-3


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def check_model(folder, x_path, t_path, y_path, labels_path=None):
    unet = UNet2DModel.from_pretrained(f"{folder}/unet", low_cpu_mem_usage=False)
    tensors = safetensors.torch.load_file(f"{folder}/unet/diffusion_pytorch_model.safetensors")
    unet.load_state_dict(tensors, strict=True)   # raises naming any missing or extra key
    unet.eval()
    x = torch.from_numpy(np.load(x_path)).permute(0, 3, 1, 2).contiguous()
    t = torch.tensor([int(v) for v in open(t_path).read().split()], dtype=torch.long)
    labels = None
    if labels_path:
        labels = torch.tensor([int(v) for v in open(labels_path).read().split()], dtype=torch.long)
        if unet.class_embedding is None or unet.config.num_class_embeds is None:
            fail("UNet2DModel has no class embedding for a class-conditional export")
        print(f"UNet2DModel num_class_embeds = {unet.config.num_class_embeds}")
    with torch.no_grad():
        out = unet(x, t, class_labels=labels).sample.permute(0, 2, 3, 1).numpy()
    want = np.load(y_path)
    if out.shape != want.shape:
        fail(f"diffusers output shape {out.shape}, engine {want.shape}")
    err = rel_error(out, want)
    print(f"UNet2DModel vs ddpm forward: max relative error {err:.3g} (limit {MODEL_TOL:g})")
    if not err <= MODEL_TOL:
        fail(f"U-Net outputs differ: {err:.3g} > {MODEL_TOL:g}")


def read_schedule(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def check_scheduler(folder, schedule_path):
    pipe = DDPMPipeline.from_pretrained(folder)
    if not isinstance(pipe.unet, UNet2DModel) or not isinstance(pipe.scheduler, DDPMScheduler):
        fail(f"DDPMPipeline loaded {type(pipe.unet).__name__}, {type(pipe.scheduler).__name__}")
    s = pipe.scheduler
    ref = read_schedule(schedule_path)
    T = len(ref["betas"])
    checks = [("betas", s.betas.double().numpy(), BETA_TOL),
              ("alphas_cumprod", s.alphas_cumprod.double().numpy(), CUMPROD_TOL)]
    if s.config.variance_type == "fixed_small":   # 0 at t = 0, where diffusers clamps it
        variance = [0.0] + [float(s._get_variance(t)) for t in range(1, T)]
        checks.append(("posterior_variance", np.array(variance), VARIANCE_TOL))
    for name, have, tol in checks:
        want = ref[name]
        if len(have) != T:
            fail(f"scheduler {name} has {len(have)} entries, ddpm schedule {T}")
        nonzero = want != 0
        err = float(np.max(np.abs(have - want)[nonzero] / np.abs(want[nonzero])))
        print(f"DDPMScheduler {name} vs ddpm schedule: max relative error {err:.3g} "
              f"(limit {tol:g})")
        if not err <= tol or np.any(have[~nonzero] > 1e-12):
            fail(f"scheduler {name} differs from ddpm schedule: {err:.3g} > {tol:g}")


def main():
    if len(sys.argv) not in (6, 7):
        fail(__doc__)
    folder, x_path, t_path, y_path, schedule_path = sys.argv[1:6]
    check_model(folder, x_path, t_path, y_path, sys.argv[6] if len(sys.argv) == 7 else None)
    check_scheduler(folder, schedule_path)
    print("diffusers: all checks passed")


if __name__ == "__main__":
    main()
