#!/usr/bin/env python3
"""Writes tests/ref/flow_sigmas_28_shift3.txt: the sigma grid of diffusers'
FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).set_timesteps(28),
final 0 included, one value a line. The values are recomputed here from the scheduler's
formula with numpy (float64) and, when diffusers is importable (.venv-diffusers/bin/python),
checked against the scheduler itself before the file is written.

usage: .venv-diffusers/bin/python tools/make_flow_grid.py [out]"""
import sys

import numpy as np

STEPS, NUM_TRAIN, SHIFT = 28, 1000, 3.0


def shifted(sigma):
    return SHIFT * sigma / (1 + (SHIFT - 1) * sigma)


def grid():
    # The scheduler's training sigmas are 1000/1000 .. 1/1000, shifted; set_timesteps spans
    # their first and last value evenly and shifts the result again, then appends 0.
    sigma_max, sigma_min = shifted(1.0), shifted(1.0 / NUM_TRAIN)
    sigmas = np.linspace(sigma_max * NUM_TRAIN, sigma_min * NUM_TRAIN, STEPS) / NUM_TRAIN
    return np.append(shifted(sigmas), 0.0)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/ref/flow_sigmas_28_shift3.txt"
    ours = grid()
    try:
        from diffusers import FlowMatchEulerDiscreteScheduler
    except ImportError:
        print("diffusers not importable: writing the recomputed grid unchecked", file=sys.stderr)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN, shift=SHIFT)
        scheduler.set_timesteps(STEPS)
        theirs = scheduler.sigmas.double().numpy()
        err = np.abs(theirs - ours).max()
        print(f"diffusers {len(theirs)} sigmas, max |diff| {err:.2e}", file=sys.stderr)
        if len(theirs) != len(ours) or err > 1e-6:
            sys.exit("the recomputed grid disagrees with diffusers")
    with open(out, "w") as f:
        f.write("".join(f"{s:.9f}\n" for s in ours))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
