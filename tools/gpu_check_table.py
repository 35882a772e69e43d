"""The closing table of tools/gpu_check.sh: ddpm.c against the PyTorch peer, row by row,
with the targets of the GPU-speed issue (docs/PERF.md, "What the next GPU run must check").

    python3 tools/gpu_check_table.py RAW.jsonl [STATUS.tsv]

RAW.jsonl holds the raw JSON lines of one call, each labelled "run": NAME by gpu_check.sh.
STATUS.tsv (optional) holds "NAME<TAB>why" for runs that produced no line (not supported,
failed, timed out), so that an empty cell says why. Our lines are read defensively: p50_ms
when present, else ms_per_step; the peer prints only its median, ms_per_step.
Exit status 0 even when targets are missed: the table reports, it does not judge the call.
"""
import json
import sys

BF16_DENSE_PEAK_TFLOPS = 989.0   # H100 SXM and H200: dense bf16 tensor-core peak

# what, batch, precision, our run, the peer's run, target speed-up, how the target reads
SPEED_ROWS = [
    ("train", 128, "bf16", "ours_train_b128_bf16", "peer_train_b128_bf16_compile", 1.3,
     ">= 1.3x torch.compile bf16"),
    ("train", 128, "tf32", "ours_train_b128_tf32", "peer_train_b128_tf32_compile", 1.1,
     ">= 1.1x torch.compile tf32"),
    ("train", 8, "tf32", "ours_train_b8_tf32", "peer_train_b8_tf32_compile", 2.0,
     ">= 2x torch.compile"),
    ("sample step", 1, "tf32", "ours_sample_b1_tf32", "peer_sample_b1_tf32_reduce_overhead", 2.0,
     ">= 2x reduce-overhead"),
    ("sample step", 256, "tf32", "ours_sample_b256_tf32", "peer_sample_b256_tf32_reduce_overhead",
     1.2, ">= 1.2x reduce-overhead"),
]
MEMORY_ROW = ("peak memory", 128, "tf32", "ours_train_b128_tf32", "peer_train_b128_tf32_eager")
DRIFT_LIMIT = 0.03   # the repeat of our first run may differ by this fraction


def read_runs(path):
    runs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{path}:{n}: not JSON ({e}); line skipped", file=sys.stderr)
                continue
            runs[record.get("run", f"line{n}")] = record
    return runs


def read_status(path):
    status = {}
    if path:
        with open(path) as f:
            for line in f:
                name, _, why = line.rstrip("\n").partition("\t")
                status[name] = why
    return status


def number(record, *keys):
    """The first of keys that holds a finite number, else None."""
    for key in keys:
        try:
            value = float(record[key])
        except (KeyError, TypeError, ValueError):
            continue
        if value == value and value not in (float("inf"), float("-inf")):
            return value
    return None


def p50(record):
    return number(record, "p50_ms", "ms_per_step") if record else None


def peak_gib(record):
    """Peak memory in GiB, under any of the names a benchmark may print it."""
    if not record:
        return None
    for keys, scale in ((("peak_mem_gib", "peak_memory_gib"), 1.0),
                        (("peak_mem_mib", "peak_memory_mib"), 1 / 1024),
                        (("peak_mem_bytes", "peak_memory_bytes"), 1 / 2**30)):
        value = number(record, *keys)
        if value is not None:
            return value * scale
    return None


def cell(value, runs, status, name, unit=""):
    if value is not None:
        return f"{value:.2f}{unit}"
    if name in runs:
        return "no figure"
    why = status.get(name, "not run")
    return why.split(" (")[0].split(":")[0]   # the reason's first words; the status table has it all


def table_rows(runs, status):
    rows = []
    for what, batch, precision, ours_name, peer_name, target, target_text in SPEED_ROWS:
        ours, peer = p50(runs.get(ours_name)), p50(runs.get(peer_name))
        ratio = peer / ours if ours and peer else None
        rows.append((what, batch, precision, cell(ours, runs, status, ours_name),
                     cell(peer, runs, status, peer_name),
                     f"{ratio:.2f}x" if ratio else "-", target_text,
                     ("yes" if ratio >= target else "no") if ratio else "-"))
    what, batch, precision, ours_name, peer_name = MEMORY_ROW
    ours, peer = peak_gib(runs.get(ours_name)), peak_gib(runs.get(peer_name))
    ratio = ours / peer if ours and peer else None
    rows.append((what, batch, precision, cell(ours, runs, status, ours_name, " GiB"),
                 cell(peer, runs, status, peer_name, " GiB"),
                 f"{ratio:.2f}" if ratio else "-", "<= PyTorch eager's",
                 ("yes" if ratio <= 1 else "no") if ratio else "-"))
    repeat = runs.get("ours_drift_repeat")
    first_name = (repeat or {}).get("repeat_of", "ours_train_b128_tf32")
    first = runs.get(first_name)
    first_ms, repeat_ms = p50(first), p50(repeat)
    drift = repeat_ms / first_ms - 1 if first_ms and repeat_ms else None
    rows.append((f"{first_name}, repeated last", (first or {}).get("batch", "-"),
                 (first or {}).get("precision", "-"),
                 cell(repeat_ms, runs, status, "ours_drift_repeat"),
                 "first: " + cell(first_ms, runs, status, first_name),
                 f"{drift:+.1%}" if drift is not None else "-",
                 f"drift within {DRIFT_LIMIT:.0%}",
                 ("yes" if abs(drift) <= DRIFT_LIMIT else "no") if drift is not None else "-"))
    return rows


def notes(runs):
    """Per-run detail printed above the table: spread, categories, kernels, MFU."""
    lines = []
    for name in sorted(runs):
        r = runs[name]
        if not name.startswith("ours_"):
            continue
        parts = [f"{name}: p10/p50/p90 " + "/".join(
            f"{v:.2f}" if v is not None else "?" for v in
            (number(r, "p10_ms"), p50(r), number(r, "p90_ms"))) + " ms"]
        if number(r, "ops_per_step") is not None:
            parts.append(f"{number(r, 'ops_per_step'):.0f} kernels/step")
        if number(r, "host_enqueue_ms") is not None:
            parts.append(f"host enqueue {number(r, 'host_enqueue_ms'):.2f} ms")
        categories = r.get("category_ms")
        if isinstance(categories, dict):
            parts.append("categories " + ", ".join(
                f"{k} {v:.2f}" for k, v in categories.items() if isinstance(v, (int, float))))
        lines.append("; ".join(parts))
    for name in ("ours_train_b128_bf16", "ours_train_b128_tf32"):
        peer = runs.get(name.replace("ours_", "peer_") + "_compile")
        ms = p50(runs.get(name))
        gflop = number(peer, "gflop_per_img") if peer else None
        if ms and gflop:
            tflops = gflop * 128 / ms   # GFLOP per image x images / ms = TFLOP/s
            lines.append(f"MFU {name}: {tflops:.1f} TFLOP/s = {tflops / BF16_DENSE_PEAK_TFLOPS:.1%} "
                         f"of {BF16_DENSE_PEAK_TFLOPS:.0f} (bf16 dense peak); FLOPs: the peer's "
                         f"count, {gflop:.3f} GFLOP per image (3x the forward)")
    return lines


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: gpu_check_table.py RAW.jsonl [STATUS.tsv]")
    runs = read_runs(sys.argv[1])
    status = read_status(sys.argv[2] if len(sys.argv) == 3 else None)
    for line in notes(runs):
        print(line)
    header = ("what", "batch", "precision", "ddpm.c p50 ms", "peer p50 ms", "ratio", "target",
              "met?")
    rows = [header] + [tuple(str(c) for c in row) for row in table_rows(runs, status)]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
