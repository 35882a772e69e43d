#!/usr/bin/env python3
"""Stand-in quality numbers for sample sets until `ddpm evaluate` (Frechet distance in a
trained network's features) lands: for each `ddpm sample` npz file,
  - FD_pixel: the Frechet distance between Gaussians fitted to the raw pixels (in [0, 1],
    784 dimensions for Fashion-MNIST) of the samples and of the 10,000 test images;
  - NN: the mean L2 distance (pixels in [0, 1]) from each sample to its nearest training
    image (low: close to the data or copied; high: off the data);
and the floors: the same two numbers for as many real training images as there are samples
(FD_pixel of real images at that sample size; NN excludes the image itself).
Pixel-space FD is not the Inception/feature FD of the literature: it ranks sets of the same
size on the same data, nothing more.

usage: /usr/bin/python3 tools/flow_metrics.py SAMPLES.npz... > table.csv"""
import gzip
import sys

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"


def idx_images(name):
    with gzip.open(f"{DATA}/{name}", "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h * w).astype(np.float64) / 255


def gaussian(x):
    return x.mean(0), np.cov(x, rowvar=False)


def frechet(a, b):
    (m1, s1), (m2, s2) = a, b
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def nearest(x, train, exclude_self=False):
    t2 = (train ** 2).sum(1)
    out = []
    for chunk in np.array_split(x, max(1, len(x) // 64)):
        d2 = (chunk ** 2).sum(1)[:, None] + t2[None, :] - 2 * chunk @ train.T
        if exclude_self:
            d2[d2 < 1e-9] = np.inf
        out.append(np.sqrt(np.clip(d2.min(1), 0, None)))
    return float(np.concatenate(out).mean())


def main():
    train, test = idx_images("train-images-idx3-ubyte.gz"), idx_images("t10k-images-idx3-ubyte.gz")
    ref = gaussian(test)
    print("set,n,fd_pixel,nn_train")
    sizes = set()
    for path in sys.argv[1:]:
        x = np.load(path)["arr_0"].reshape(-1, 784).astype(np.float64) / 255
        sizes.add(len(x))
        print(f"{path.rsplit('/', 1)[-1]},{len(x)},{frechet(gaussian(x), ref):.3f},{nearest(x, train):.3f}")
    rng = np.random.default_rng(0)
    for n in sorted(sizes):
        real = train[rng.choice(len(train), n, replace=False)]
        print(f"floor_train_images,{n},{frechet(gaussian(real), ref):.3f},"
              f"{nearest(real, train, exclude_self=True):.3f}")


if __name__ == "__main__":
    main()
