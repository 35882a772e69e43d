"""The table of tools/bench_cpu.sh from its raw JSON lines (docs/perf-logs/cpu-*.jsonl).

Per label: the median over rounds of each run's median step, with the rounds' p10 and p90
(nearest rank); our ratios against the faster PyTorch 2.x mode; the FLOP rate against the
SGEMM peak; the step beside a busy process against the step alone; and where our step's
time goes, per category of op (medians over rounds).
    /usr/bin/python3 tools/bench_cpu_table.py docs/perf-logs/cpu-<date>-<commit>.jsonl
"""
import json
import statistics
import sys


def nearest_rank(values, q):
    s = sorted(values)
    return s[int(round(q * (len(s) - 1)))]


def spread(values):
    return statistics.median(values), nearest_rank(values, 0.1), nearest_rank(values, 0.9)


def main(path):
    machine, runs = None, {}
    for line in open(path):
        row = json.loads(line)
        if row.get("record") == "machine":
            machine = row
        elif "label" in row:
            runs.setdefault(row["label"], []).append(row)
    if not machine or not runs:
        sys.exit(f"{path}: no machine record or no runs")
    own = runs.pop("sgemm openblas-own-kernels", [])
    med = {label: spread([r["ms_per_step"] for r in rows]) for label, rows in runs.items()}

    out = [f"Machine: {machine['cpu']}, {machine['threads']} threads, vector extensions: "
           f"{machine['vector_extensions'].strip()}; {machine['date']}.",
           f"Versions: ddpm.c {machine['commit']}, oneDNN {machine['onednn']}, OpenBLAS "
           f"{machine['openblas']} (OpenMP), {machine['gcc']}; PyTorch {machine['torch2']} (PyPI) "
           f"and {machine['torch1']} (Debian). Raw lines: `{path}`.", "",
           "| step | engine | rounds | median ms | p10 | p90 |", "|---|---|---|---|---|---|"]
    for label in sorted(med, key=lambda l: (l.split()[0], "ddpm.c" not in l, l)):
        m, lo, hi = med[label]
        what, engine = label.split(" ", 1)
        out.append(f"| {what} | {engine} | {len(runs[label])} | {m:.1f} | {lo:.1f} | {hi:.1f} |")

    out += ["", "| measure | value | target |", "|---|---|---|"]
    for what in ("train", "sample"):
        ours = med.get(f"{what} ddpm.c")
        peers = [(med[l][0], l.split(" ", 1)[1]) for l in (f"{what} torch2 eager", f"{what} torch2 compile")
                 if l in med]
        if ours and peers:
            best, name = min(peers)
            out.append(f"| {what}: PyTorch {machine['torch2']} ({name.split()[-1]}, the faster) ms / ddpm.c ms "
                       f"| {best / ours[0]:.2f}x | ≥ 1.3x |")
        old = med.get(f"{what} torch1.13 eager")
        if ours and old:
            out.append(f"| {what}: PyTorch {machine['torch1']} ms / ddpm.c ms | {old[0] / ours[0]:.2f}x | |")
    train = runs.get("train ddpm.c", [])
    if train and all("sgemm_peak_gflops" in r for r in train):
        rate = statistics.median(r["gflops"] for r in train)
        peak = statistics.median(r["sgemm_peak_gflops"] for r in train)
        out.append(f"| train: FLOP rate ({train[0]['gflop_per_img']:.2f} GFLOP/image) / SGEMM peak "
                   f"(OpenBLAS, {train[0].get('blas_core', '?')} kernels as this environment sets them) "
                   f"| {rate:.0f} / {peak:.0f} GFLOP/s = {rate / peak:.0%} | ≥ 75% |")
        for r in own:
            out.append(f"| train: the same FLOP rate / SGEMM peak with OpenBLAS's own kernel choice "
                       f"({r.get('blas_core', '?')}) | {rate:.0f} / {r['sgemm_peak_gflops']:.0f} GFLOP/s "
                       f"= {rate / r['sgemm_peak_gflops']:.0%} | ≥ 75% |")
    busy = med.get("train ddpm.c beside a busy process")
    if busy and "train ddpm.c" in med:
        out.append(f"| train beside one busy process / alone | {busy[0] / med['train ddpm.c'][0]:.2f}x | ≤ 2.5x |")

    for what in ("train", "sample"):
        rows = [r for r in runs.get(f"{what} ddpm.c", []) if "category_ms" in r]
        if not rows:
            continue
        cats = {k: statistics.median(r["category_ms"][k] for r in rows) for k in rows[0]["category_ms"]}
        if what == "train":
            cats["other"] = statistics.median(r.get("other_ms", 0) for r in rows)
        total = sum(cats.values())
        out += ["", f"Where our {what} step's time goes (profiled, ms per step; median of {len(rows)}):", "",
                "| " + " | ".join(cats) + " |", "|" + "---|" * len(cats),
                "| " + " | ".join(f"{v:.0f} ({v / total:.0%})" for v in cats.values()) + " |"]
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
