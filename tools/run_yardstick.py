"""Runs the PyTorch peer (.yardstick/bench_torch.py, a copy of ../shared/yardstick) with its
code unchanged, for tools/gpu_check.sh.

    python3 tools/run_yardstick.py train --config cifar10 --batch 128 --precision bf16 --compile default

Two things are added around bench_torch.py, both from outside its code:

1. The timestep-embedding workaround. Copies of ddpm_unet_torch.py from before the fix
   in docs/GPU.md build their frequencies with torch.arange and no device, which puts
   them on the CPU next to GPU timesteps: eager mode and torch.compile both stop there.
   When the peer's timestep_embedding calls torch.arange without a device (read from its
   source), torch.arange here defaults to the GPU; a fixed copy runs as it is. (Setting
   PyTorch's default device would also do it, but that mode intercepts every torch call
   and would slow the peer's eager steps.)

2. A gate, so that the peer's compile overlaps other work but its timed steps overlap
   nothing. With DDPM_PEER_READY=FILE and DDPM_PEER_GO=FILE set, the peer runs its
   warm-up steps (the first one compiles; reduce-overhead records its CUDA graphs), writes
   FILE READY, waits until GO exists (at most DDPM_PEER_GATE_S seconds, default 600;
   exit status 3 past that), runs 2 more warm-up steps and only then its timed steps.
   Without those variables it runs exactly as bench_torch.py does.

YARDSTICK_DIR names the peer's folder (default: .yardstick beside tools/).
"""
import functools
import inspect
import os
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PEER_DIR = os.environ.get("YARDSTICK_DIR") or os.path.join(ROOT, ".yardstick")
REWARM_STEPS = 2   # after the wait: caches and clocks back to steady state


def arange_on(device):
    plain_arange = torch.arange

    @functools.wraps(plain_arange)
    def arange(*args, **kwargs):
        kwargs.setdefault("device", device)
        return plain_arange(*args, **kwargs)

    return arange


def needs_arange_workaround(unet_module):
    """True when the peer's timestep_embedding calls torch.arange without a device."""
    source = inspect.getsource(unet_module.timestep_embedding)
    arange_calls = [line for line in source.splitlines() if "torch.arange(" in line]
    return any("device=" not in line for line in arange_calls)


def gated(timed, ready_path, go_path, wait_limit_s):
    """bench_torch.timed, split at the gate: warm-ups, READY, wait for GO, timed steps."""

    def timed_after_gate(fn, dev, warmup, iters):
        for _ in range(warmup):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        with open(ready_path, "w") as f:
            f.write("ready\n")
        deadline = time.monotonic() + wait_limit_s
        while not os.path.exists(go_path):
            if time.monotonic() > deadline:
                print(f"run_yardstick: no {go_path} within {wait_limit_s:g} s", file=sys.stderr)
                sys.exit(3)
            time.sleep(0.2)
        return timed(fn, dev, REWARM_STEPS, iters)

    return timed_after_gate


def main():
    peer_script = os.path.join(PEER_DIR, "bench_torch.py")
    if not os.path.exists(peer_script):
        sys.exit(f"run_yardstick: no {peer_script} (cp -r ../shared/yardstick .yardstick)")
    sys.path.insert(0, PEER_DIR)
    import bench_torch
    import ddpm_unet_torch

    if torch.cuda.is_available() and needs_arange_workaround(ddpm_unet_torch):
        print("run_yardstick: the peer's torch.arange has no device: defaulting it to the GPU",
              file=sys.stderr)
        torch.arange = arange_on(torch.device("cuda"))
    ready, go = os.environ.get("DDPM_PEER_READY"), os.environ.get("DDPM_PEER_GO")
    if bool(ready) != bool(go):
        sys.exit("run_yardstick: DDPM_PEER_READY and DDPM_PEER_GO go together")
    if ready:
        wait_limit = float(os.environ.get("DDPM_PEER_GATE_S", "600"))
        bench_torch.timed = gated(bench_torch.timed, ready, go, wait_limit)
    sys.argv = [bench_torch.__file__] + sys.argv[1:]
    bench_torch.main()


if __name__ == "__main__":
    main()
