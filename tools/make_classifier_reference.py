"""Write tests/ref/classifier_small.safetensors: PyTorch reference for the noisy classifier.

Regenerate with:  /usr/bin/python3 tools/make_classifier_reference.py
(Debian's PyTorch 1.13; the `python3` on PATH has no torch.)

The classifier is the U-Net's encoder half (tools/torch_unet.py's conv_in, time_embedding,
down_blocks, mid_block) followed by out.0 GroupNorm, SiLU, the mean over positions and
out.2 Linear: include/classifier.h's network, under the same parameter names.

Contents (F32 unless noted; images NHWC, parameters in PyTorch layout):
  input.x_t, input.t (I32), input.labels (I32)   - one batch, B=3
  <param>                                        - perturbed default-init weights
  logits (B, classes), loss                      - forward, mean cross-entropy
  grad.<param>                                   - d loss / d param
  guidance.grad_x                                - d/dx of sum_i log softmax(logits_i)[y_i]
Metadata: config, description.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from torch_unet import EPS, UNet2DModel, timestep_embedding  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref", "classifier_small.safetensors")

SMALL = dict(image_size=8, in_channels=3, out_channels=3, ch=16, ch_mult=[1, 2],
             num_res_blocks=1, attn_resolutions=[4], groups=8, dropout=0.0,
             num_classes=5, objective="classifier")
T = [0, 371, 998]
LABELS = [4, 0, 2]


class NoisyClassifier(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        unet = UNet2DModel(cfg)
        self.cfg = cfg
        self.conv_in = unet.conv_in
        self.time_embedding = unet.time_embedding
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block
        c = cfg["ch"] * cfg["ch_mult"][-1]
        self.out = nn.Sequential(nn.GroupNorm(cfg["groups"], c, eps=EPS), nn.SiLU(),
                                 nn.Linear(c, cfg["num_classes"]))

    def forward(self, x, t):
        temb = self.time_embedding(timestep_embedding(t, self.cfg["ch"]))
        x = self.conv_in(x)
        skips = [x]
        for blk in self.down_blocks:
            x = blk.down(x, temb, skips)
        x = self.mid_block(x, temb)
        h = self.out[1](self.out[0](x)).mean(dim=(2, 3))
        return self.out[2](h)


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(4321)
    model = NoisyClassifier(SMALL).float()
    with torch.no_grad():   # perturb biases and norm scales off their defaults
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() == 1 else 0.01))
    names = [n for n, _ in model.named_parameters()]
    b, s, c = len(T), SMALL["image_size"], SMALL["in_channels"]
    x_nhwc = torch.randn(b, s, s, c)
    x = x_nhwc.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    t = torch.tensor(T, dtype=torch.int32)
    y = torch.tensor(LABELS, dtype=torch.int64)

    logits = model(x, t)
    loss = F.cross_entropy(logits, y)
    loss.backward(retain_graph=True)
    pdict = dict(model.named_parameters())
    grads = {n: pdict[n].grad.detach().clone() for n in names}
    log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
    grad_x, = torch.autograd.grad(log_p, x)

    tensors = {"input.x_t": x_nhwc.numpy(), "input.t": t.numpy(),
               "input.labels": torch.tensor(LABELS, dtype=torch.int32).numpy()}
    for n in names:
        tensors[n] = pdict[n].detach().numpy()
    tensors["logits"] = logits.detach().numpy()
    tensors["loss"] = loss.detach().reshape(1).numpy()
    for n in names:
        tensors["grad." + n] = grads[n].numpy()
    tensors["guidance.grad_x"] = grad_x.permute(0, 2, 3, 1).contiguous().numpy()
    meta = {"config": json.dumps(SMALL),
            "description": "ddpm.c noisy classifier reference (PyTorch 1.13, float32): logits, "
                           "cross-entropy gradients and the guidance gradient; images NHWC"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.write(OUT, tensors, meta)
    back, _ = st_io.read(OUT)
    assert list(back) == list(tensors)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
