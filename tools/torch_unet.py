"""PyTorch port of diffusers' UNet2DModel as configured for google/ddpm-cifar10-32.

Written from the ddpm.c spec; module/attribute names are chosen so that
state_dict() keys equal the diffusers checkpoint keys exactly.
Config keys: image_size, in_channels, out_channels, ch, ch_mult, num_res_blocks,
attn_resolutions, groups, dropout, and optionally num_class_embeds (a class-conditional
model: class_embedding.weight's row for each label is added to the time embedding).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6  # GroupNorm eps used everywhere in the checkpoint


def timestep_embedding(t, dim):
    """Sinusoidal embedding (flip_sin_to_cos=False, downscale_freq_shift=1).

    The exponent is formed in float32 (as diffusers does) but exp/sin/cos run in
    float64 so that large t (up to 999) does not lose phase precision.
    """
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1)
    emb = t[:, None].double() * torch.exp(exponent.double())[None]
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1).float()


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # Only present when channels change; otherwise the skip is the identity.
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=EPS)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])  # key "to_out.0.*"

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
        o = self.to_out[0](a @ v)
        return o.transpose(1, 2).reshape(b, c, h, w) + x


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        # Asymmetric pad (right/bottom only) then a valid stride-2 conv.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    """A down or up block: resnets (each optionally followed by attention) and
    an optional resampler. `attentions` is registered before `resnets` to
    mirror diffusers' module order.
    """

    def __init__(self, resnets, attns, sampler, sampler_name):
        super().__init__()
        if attns is not None:
            self.attentions = nn.ModuleList(attns)
        self.resnets = nn.ModuleList(resnets)
        self.sampler_name = sampler_name
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))

    def _layer(self, j, x, temb):
        x = self.resnets[j](x, temb)
        return self.attentions[j](x) if hasattr(self, "attentions") else x

    def _resample(self, x):
        s = getattr(self, self.sampler_name, None)
        return s[0](x) if s is not None else x

    def down(self, x, temb, skips):
        """Push every resnet(+attn) output and the downsampled output."""
        for j in range(len(self.resnets)):
            x = self._layer(j, x, temb)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self._resample(x)
            skips.append(x)
        return x

    def up(self, x, temb, skips):
        """Each resnet consumes one skip (concatenated on channels)."""
        for j in range(len(self.resnets)):
            x = self._layer(j, torch.cat([x, skips.pop()], dim=1), temb)
        return self._resample(x)


class MidBlock(nn.Module):
    def __init__(self, c, temb_dim, groups, dropout):
        super().__init__()
        self.attentions = nn.ModuleList([Attention(c, groups)])
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb_dim, groups, dropout)
                                      for _ in range(2)])

    def forward(self, x, temb):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class UNet2DModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        ch, g, p = cfg["ch"], cfg["groups"], cfg["dropout"]
        boc = [ch * m for m in cfg["ch_mult"]]
        n, nrb = len(boc), cfg["num_res_blocks"]
        temb_dim = 4 * ch
        res = [cfg["image_size"] // 2 ** i for i in range(n)]
        use_attn = [r in cfg["attn_resolutions"] for r in res]

        self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch, temb_dim)
        if cfg.get("num_class_embeds", 0):
            self.class_embedding = nn.Embedding(cfg["num_class_embeds"], temb_dim)

        # Track the channel count of every tensor pushed on the skip list, so
        # the up path can size its concatenations exactly as forward() will.
        skips = [ch]
        downs = []
        for i in range(n):
            cin = ch if i == 0 else boc[i - 1]
            resnets = [ResnetBlock2D(cin if j == 0 else boc[i], boc[i], temb_dim, g, p)
                       for j in range(nrb)]
            attns = [Attention(boc[i], g) for _ in range(nrb)] if use_attn[i] else None
            skips += [boc[i]] * nrb
            down = Downsample(boc[i]) if i != n - 1 else None
            if down is not None:
                skips.append(boc[i])
            downs.append(Block(resnets, attns, down, "downsamplers"))
        self.down_blocks = nn.ModuleList(downs)

        self.mid_block = MidBlock(boc[-1], temb_dim, g, p)

        ups, prev = [], boc[-1]
        for i in range(n):
            lvl = n - 1 - i
            resnets = []
            for j in range(nrb + 1):
                cin = (prev if j == 0 else boc[lvl]) + skips.pop()
                resnets.append(ResnetBlock2D(cin, boc[lvl], temb_dim, g, p))
            attns = [Attention(boc[lvl], g) for _ in range(nrb + 1)] if use_attn[lvl] else None
            up = Upsample(boc[lvl]) if i != n - 1 else None
            ups.append(Block(resnets, attns, up, "upsamplers"))
            prev = boc[lvl]
        assert not skips
        self.up_blocks = nn.ModuleList(ups)

        self.conv_norm_out = nn.GroupNorm(g, ch, eps=EPS)
        self.conv_out = nn.Conv2d(ch, cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, class_labels=None):
        """x: (B, C, H, W) float; t: (B,) integer timesteps; class_labels: (B,) long, for a
        class-conditional model."""
        temb = self.time_embedding(timestep_embedding(t, self.cfg["ch"]))
        if hasattr(self, "class_embedding"):
            temb = temb + self.class_embedding(class_labels)
        x = self.conv_in(x)
        skips = [x]
        for blk in self.down_blocks:
            x = blk.down(x, temb, skips)
        x = self.mid_block(x, temb)
        for blk in self.up_blocks:
            x = blk.up(x, temb, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
