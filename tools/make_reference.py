"""Write tests/ref/unet_small.safetensors: PyTorch reference for the ddpm.c U-Net.

Regenerate with:  /usr/bin/python3 tools/make_reference.py
(Debian's PyTorch 1.13; the `python3` on PATH has no torch.)

Contents (F32 unless noted; images NHWC, parameters in PyTorch layout):
  input.x_t, input.t (I32), input.target  - one batch, B=2
  <param>                                 - perturbed default-init weights
  output, loss                            - forward pass, MSE loss
  grad.<param>                            - d loss / d param
  adamw.losses, adamw.grad_norms (5,)     - 5 AdamW steps on the same batch
  adamw.final.<param>                     - weights after those steps
Metadata: config, adamw (JSON strings), description.
Also asserts the google/ddpm-cifar10-32 config has 35,746,307 parameters.
"""
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from torch_unet import UNet2DModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "unet_small.safetensors")

CIFAR10 = dict(image_size=32, in_channels=3, out_channels=3, ch=128,
               ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16],
               groups=32, dropout=0.0)
SMALL = dict(image_size=8, in_channels=3, out_channels=3, ch=16, ch_mult=[1, 2],
             num_res_blocks=1, attn_resolutions=[4], groups=8, dropout=0.0)
ADAMW = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
             grad_clip=1.0, steps=5)
T = [3, 917]


def nhwc(x):
    return x.detach().permute(0, 2, 3, 1).contiguous().numpy()


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    # Architecture sanity check against the published checkpoint size.
    torch.manual_seed(0)
    n_cifar = sum(p.numel() for p in UNet2DModel(CIFAR10).parameters())
    assert n_cifar == 35_746_307, n_cifar
    print(f"cifar10 config parameter count: {n_cifar} (OK)")

    torch.manual_seed(1234)
    model = UNet2DModel(SMALL).float()
    # Default init leaves biases at 0 and norm scales at 1, which would hide
    # bugs such as a dropped bias or swapped gamma/beta: perturb everything.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() == 1 else 0.01))
    model.train()  # dropout is 0, so train mode is deterministic anyway
    names = [n for n, _ in model.named_parameters()]
    n_small = sum(p.numel() for p in model.parameters())
    print(f"small config parameter count: {n_small}")

    b, s, c = len(T), SMALL["image_size"], SMALL["in_channels"]
    x_nhwc = torch.randn(b, s, s, c)
    tgt_nhwc = torch.randn(b, s, s, SMALL["out_channels"])
    x = x_nhwc.permute(0, 3, 1, 2).contiguous()
    target = tgt_nhwc.permute(0, 3, 1, 2).contiguous()
    t = torch.tensor(T, dtype=torch.int32)

    opt_model = copy.deepcopy(model)  # AdamW run starts from the stored weights

    out = model(x, t)
    loss = F.mse_loss(out, target)
    loss.backward()

    # AdamW: loss_k is measured before step k's update.
    params = list(opt_model.parameters())
    opt = torch.optim.AdamW(params, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]),
                            eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    losses, norms = [], []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        l = F.mse_loss(opt_model(x, t), target)
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, ADAMW["grad_clip"])))
        opt.step()
        losses.append(float(l))
    print("adamw losses:", losses)
    print("adamw grad norms:", norms)

    tensors = {"input.x_t": x_nhwc.numpy(), "input.t": t.numpy(),
               "input.target": tgt_nhwc.numpy()}
    pdict = dict(model.named_parameters())
    for n in names:
        tensors[n] = pdict[n].detach().numpy()
    tensors["output"] = nhwc(out)
    for n in names:
        tensors["grad." + n] = pdict[n].grad.numpy()
    tensors["loss"] = loss.detach().reshape(1).numpy()
    tensors["adamw.losses"] = torch.tensor(losses, dtype=torch.float32).numpy()
    tensors["adamw.grad_norms"] = torch.tensor(norms, dtype=torch.float32).numpy()
    for n, p in opt_model.named_parameters():
        tensors["adamw.final." + n] = p.detach().numpy()

    meta = {"config": json.dumps(SMALL), "adamw": json.dumps(ADAMW),
            "description": "ddpm.c U-Net reference (PyTorch 1.13, float32): forward, "
                           "MSE gradients and 5 AdamW steps on one batch; images NHWC, "
                           "params in PyTorch layout"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)

    # Self-check: round-trip through our reader.
    back, bmeta = st_io.read(OUT)
    assert list(back) == list(tensors)
    for k, v in tensors.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        assert (back[k] == v).all(), k
    assert json.loads(bmeta["config"]) == SMALL
    assert back["output"].shape == (b, s, s, SMALL["out_channels"])
    assert back["adamw.losses"][0] == back["loss"][0]
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
