"""Write tests/ref/unet_class.safetensors: PyTorch reference for the class-conditional
ddpm.c U-Net (diffusers' UNet2DModel with num_class_embeds: class_embedding.weight's row
for each label added to the time embedding after linear_2).

Regenerate with:  /usr/bin/python3 tools/make_reference_class.py
(Debian's PyTorch 1.13; the `python3` on PATH has no torch.)

Model: the small config of tests/ref/unet_small.safetensors with num_class_embeds 5
(classes 0..3 and the null class 4). Batch 3 with labels [1, 4, 1]: rows 0, 2 and 3 of
the table are unused, so their gradient is exactly zero; row 1 sums two samples.

Contents (F32 unless noted; images NHWC, parameters in PyTorch layout):
  input.x_t, input.t (I32), input.labels (I32), input.target
  <param>                 perturbed default-init weights (diffusers names)
  output, loss            forward pass, MSE loss
  grad.<param>            d loss / d param, class_embedding.weight included
Metadata: config (JSON), description.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from torch_unet import UNet2DModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "unet_class.safetensors")

CONFIG = dict(image_size=8, in_channels=3, out_channels=3, ch=16, ch_mult=[1, 2],
              num_res_blocks=1, attn_resolutions=[4], groups=8, dropout=0.0,
              num_class_embeds=5, class_dropout=0.1)
T = [3, 917, 400]
LABELS = [1, 4, 1]


def nhwc(x):
    return x.detach().permute(0, 2, 3, 1).contiguous().numpy()


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(4321)
    model = UNet2DModel(CONFIG).float()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() == 1 else 0.01))
    names = [n for n, _ in model.named_parameters()]
    assert "class_embedding.weight" in names

    b, s, c = len(T), CONFIG["image_size"], CONFIG["in_channels"]
    x_nhwc = torch.randn(b, s, s, c)
    tgt_nhwc = torch.randn(b, s, s, CONFIG["out_channels"])
    x = x_nhwc.permute(0, 3, 1, 2).contiguous()
    target = tgt_nhwc.permute(0, 3, 1, 2).contiguous()
    t = torch.tensor(T, dtype=torch.int32)
    labels = torch.tensor(LABELS, dtype=torch.int32)

    out = model(x, t, labels.long())
    loss = F.mse_loss(out, target)
    loss.backward()
    table_grad = model.class_embedding.weight.grad
    unused = [r for r in range(CONFIG["num_class_embeds"]) if r not in LABELS]
    assert all((table_grad[r] == 0).all() for r in unused)

    tensors = {"input.x_t": x_nhwc.numpy(), "input.t": t.numpy(), "input.labels": labels.numpy(),
               "input.target": tgt_nhwc.numpy()}
    pdict = dict(model.named_parameters())
    for n in names:
        tensors[n] = pdict[n].detach().numpy()
    tensors["output"] = nhwc(out)
    for n in names:
        tensors["grad." + n] = pdict[n].grad.numpy()
    tensors["loss"] = loss.detach().reshape(1).numpy()
    meta = {"config": json.dumps(CONFIG),
            "description": "ddpm.c class-conditional U-Net reference (PyTorch 1.13, float32): "
                           "forward and MSE gradients on one batch; images NHWC, params in "
                           "PyTorch layout"}
    st_io.write(OUT, tensors, meta)
    back, _ = st_io.read(OUT)
    for k, v in tensors.items():
        assert (back[k] == v).all(), k
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
