"""An exported autoencoder (ddpm export of an objective=vae checkpoint) in diffusers:
AutoencoderKL.from_pretrained loads it with no missing or unexpected key, and its
posterior mean of the first N Fashion-MNIST images (padded to 32, scaled to [-1, 1] as
the engine does), times the scaling factor, equals the latents `ddpm encode` wrote.

usage: vae_diffusers_check.py EXPORT_DIR LATENTS.safetensors IMAGES_IDX_GZ SCALING_FACTOR
"""
import gzip
import sys

import numpy as np
import safetensors.torch  # noqa: F401  diffusers 0.30 calls it without importing it
import torch
from diffusers import AutoencoderKL
from safetensors.numpy import load_file


def main():
    folder, latents_path, idx_path, factor = sys.argv[1:5]
    vae, info = AutoencoderKL.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"loading {folder}: {bad}")
    latents = load_file(latents_path)["latents"]
    n = latents.shape[0]
    with gzip.open(idx_path) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    padded = np.zeros((n, 32, 32), dtype=np.uint8)
    padded[:, 2:30, 2:30] = raw
    x = torch.from_numpy(padded.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    with torch.no_grad():
        mean = vae.encode(x[:, None]).latent_dist.mean * float(factor)
    want = mean.permute(0, 2, 3, 1).numpy()
    err = np.abs(latents - want).max() / np.abs(want).max()
    print(f"AutoencoderKL posterior mean vs ddpm encode: max relative error {err:.3g} "
          f"({n} images, latents {latents.shape[1:]})")
    if not err <= 1e-4:
        sys.exit("the exported autoencoder encodes differently")
    if abs(vae.config.scaling_factor - float(factor)) > 1e-6 * float(factor):
        sys.exit(f"config scaling_factor {vae.config.scaling_factor}, expected {factor}")


if __name__ == "__main__":
    main()
