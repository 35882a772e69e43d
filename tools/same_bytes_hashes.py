#!/usr/bin/env python3
"""Hashes of a run's results, for tests/e2e_same_bytes.sh: one line per tensor of a
safetensors checkpoint (raw bytes), one for the loss column of log.csv, and one for
the sampled images (arr_0 of samples.npz). Usage: same_bytes_hashes.py RUN_DIR CKPT NPZ"""
import hashlib, json, struct, sys
import numpy as np

def sha(data):
    return hashlib.sha256(data).hexdigest()[:32]

def checkpoint_lines(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    for name in sorted(k for k in header if k != "__metadata__"):
        begin, end = header[name]["data_offsets"]
        yield f"tensor {name} {sha(body[begin:end])}"

def main():
    run, ckpt, npz = sys.argv[1:4]
    for line in checkpoint_lines(ckpt):
        print(line)
    with open(f"{run}/log.csv") as f:
        rows = [l.rstrip("\n").split(",") for l in f]
    col = rows[0].index("loss")
    print("loss_column", sha("\n".join(r[col] for r in rows[1:]).encode()))
    images = np.load(npz)["arr_0"]
    print("samples", images.shape, sha(np.ascontiguousarray(images).tobytes()))

main()
