"""Runs the PyTorch peer (.yardstick/bench_torch.py, a copy of ../shared/yardstick) on the
GPU, its code unchanged.

The peer builds its timestep-embedding frequencies with torch.arange and no device,
which puts them on the CPU next to GPU timesteps: eager mode and torch.compile both
stop there. Here torch.arange without a device makes them on the GPU. (Setting
PyTorch's default device would do it too, but its mode intercepts every torch call
and would slow the peer's eager steps.)
    python3 tools/run_yardstick.py train --config cifar10 --batch 128 --precision tf32
"""
import functools
import os
import runpy
import sys

import torch

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".yardstick", "bench_torch.py")


def arange_on(device):
    plain_arange = torch.arange

    @functools.wraps(plain_arange)
    def arange(*args, **kwargs):
        kwargs.setdefault("device", device)
        return plain_arange(*args, **kwargs)

    return arange


if __name__ == "__main__":
    if torch.cuda.is_available():
        torch.arange = arange_on(torch.device("cuda"))
    sys.argv = [PEER] + sys.argv[1:]
    sys.path.insert(0, os.path.dirname(PEER))
    runpy.run_path(PEER, run_name="__main__")
