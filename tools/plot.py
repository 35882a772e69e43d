#!/usr/bin/python3
"""Plots of a training run folder (ddpm train's out_dir), as PNGs.

usage: tools/plot.py RUN_DIR [--out DIR] [--ddpm bin/ddpm]

Reads RUN_DIR/log.csv and RUN_DIR/config.json, and runs `ddpm schedule` on that config.
Writes into DIR (default RUN_DIR/plots):
  loss.png            the loss against the step (log scale)
  loss_quartiles.png  the loss of each timestep quartile (t in [0, T/4), ... [3T/4, T))
  grad_lr.png         the gradient norm (before clipping) and the learning rate
  schedule.png        the schedule's per-timestep arrays (betas, alphas_cumprod, ...)
Needs Debian's python3-matplotlib and python3-numpy.
"""
import argparse
import csv
import io
import math
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")   # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

# The arrays worth seeing on one figure each: values in [0, 1] on a linear axis,
# the rest on a log axis.
SCHEDULE_LINEAR = ["alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"]
SCHEDULE_LOG = ["betas", "posterior_variance", "sqrt_recipm1_alphas_cumprod"]


def die(message):
    print(f"plot.py: {message}", file=sys.stderr)
    sys.exit(1)


def read_csv(text, origin):
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        die(f"{origin}: no rows")
    columns = {}
    for key in rows[0]:
        try:
            columns[key] = [float(r[key]) if r[key] not in ("", None) else math.nan
                            for r in rows]
        except ValueError:
            die(f"{origin}: column '{key}' is not numeric")
    return columns


def read_log(run_dir):
    path = os.path.join(run_dir, "log.csv")
    try:
        with open(path) as f:
            log = read_csv(f.read(), path)
    except OSError as e:
        die(f"{path}: {e.strerror} (is {run_dir} a ddpm train out_dir?)")
    for key in ("step", "loss", "grad_norm", "lr", "loss_q0", "loss_q3"):
        if key not in log:
            die(f"{path}: no '{key}' column")
    return log


def read_schedule(run_dir, ddpm):
    config = os.path.join(run_dir, "config.json")
    try:
        result = subprocess.run([ddpm, "schedule", "--config", config], capture_output=True,
                                text=True)
    except OSError as e:
        die(f"{ddpm}: {e.strerror} (pass --ddpm PATH)")
    if result.returncode != 0:
        die(f"{ddpm} schedule --config {config}: {result.stderr.strip()}")
    return read_csv(result.stdout, f"{ddpm} schedule")


def save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(path)


def plot_loss(log, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(log["step"], log["loss"], lw=1)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    save(fig, out_dir, "loss.png")


def plot_quartiles(log, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4))
    for q in range(4):
        ax.plot(log["step"], log[f"loss_q{q}"], lw=1, label=f"t in [{q}T/4, {q + 1}T/4)")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="loss by timestep quartile")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, out_dir, "loss_quartiles.png")


def plot_grad_lr(log, out_dir):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(log["step"], log["grad_norm"], lw=1)
    top.set(ylabel="gradient norm", title="gradient norm and learning rate")
    top.grid(alpha=0.3)
    bottom.plot(log["step"], log["lr"], lw=1, color="tab:orange")
    bottom.set(xlabel="step", ylabel="learning rate")
    bottom.grid(alpha=0.3)
    save(fig, out_dir, "grad_lr.png")


def plot_schedule(schedule, out_dir):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in SCHEDULE_LINEAR:
        left.plot(schedule["t"], schedule[name], lw=1, label=name)
    for name in SCHEDULE_LOG:
        right.plot(schedule["t"], schedule[name], lw=1, label=name)
    left.set(xlabel="t", title="schedule")
    right.set(xlabel="t", yscale="log", title="schedule (log scale)")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save(fig, out_dir, "schedule.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="where the PNGs go (default RUN_DIR/plots)")
    parser.add_argument("--ddpm", default=os.path.join(os.path.dirname(__file__), "..", "bin",
                                                       "ddpm"))
    args = parser.parse_args()
    out_dir = args.out or os.path.join(args.run_dir, "plots")
    log = read_log(args.run_dir)
    schedule = read_schedule(args.run_dir, args.ddpm)
    os.makedirs(out_dir, exist_ok=True)
    plot_loss(log, out_dir)
    plot_quartiles(log, out_dir)
    plot_grad_lr(log, out_dir)
    plot_schedule(schedule, out_dir)


if __name__ == "__main__":
    main()
