"""Why: docs/PERF.md explains the batch-128 step from the time its convolutions take, and
the only record of that is cuDNN's algorithm search. This sums the search's timings (a
DDPM_CONV_VERBOSE=1 log) over the convolutions of one training step of the yardstick's
U-Net: each shape's forward, backward-data and backward-filter time times the number of
convolutions of that shape in the model (found by running the yardstick's model once on
the CPU with a hook on every Conv2d).
    /usr/bin/python3 tools/conv_step_time.py docs/perf-logs/2026-11-22-H100-conv-choices-tf32.log
"""
import collections, os, re, sys
import torch

if len(sys.argv) != 2:
    sys.exit("usage: conv_step_time.py CONV_SEARCH_LOG (a DDPM_CONV_VERBOSE=1 log at batch 128)")
here = os.path.dirname(os.path.abspath(__file__))
candidates = [os.environ.get("YARDSTICK_DIR"), os.path.join(here, "..", ".yardstick"),
              os.path.join(here, "..", "..", "shared", "yardstick")]
found = [d for d in candidates if d and os.path.exists(os.path.join(d, "ddpm_unet_torch.py"))]
if not found:
    sys.exit("conv_step_time.py: no ddpm_unet_torch.py in YARDSTICK_DIR, .yardstick or ../shared/yardstick")
sys.path.insert(0, found[0])
from ddpm_unet_torch import UNet

counts = collections.Counter()
first = []
def hook(mod, inp, out):
    x = inp[0]
    h, w = x.shape[2], x.shape[3]
    if mod.stride[0] == 2:   # the yardstick pads bottom/right before the conv; the log names the unpadded input
        h, w = h - 1, w - 1
    key = (h, w, x.shape[1], mod.out_channels, mod.kernel_size[0], mod.stride[0])
    counts[key] += 1
    if not first:
        first.append(key)

model = UNet()   # cifar10: (128, 256, 256, 256), 2 layers per block, attention at 16x16
for m in model.modules():
    if isinstance(m, torch.nn.Conv2d):
        m.register_forward_hook(hook)
with torch.no_grad():
    model(torch.zeros(1, 3, 32, 32), torch.tensor([1]))

line = re.compile(r"conv (forward|backward data|backward filter): x \(\d+, (\d+), (\d+), (\d+)\) "
                  r"w \((\d+), (\d+), \d+, \d+\) stride (\d+) .*?: .*?([\d.]+) ms")
per_dir = collections.Counter()
seen = set()
for text in open(sys.argv[1]):
    m = line.search(text)
    if not m:
        continue
    d, h, w, c, oc, k, s, ms = m.groups()
    key = (int(h), int(w), int(c), int(oc), int(k), int(s))
    if key not in counts:
        sys.exit(f"log shape {key} is not a convolution of the model")
    n = counts[key]
    if d == "backward data" and key == first[0]:
        n -= 1   # the input image needs no gradient
    per_dir[d] += n * float(ms)
    seen.add(key)
missing = set(counts) - seen
if missing:
    sys.exit(f"shapes of the model missing from the log: {sorted(missing)}")
print(f"{sum(counts.values())} convolutions, {len(counts)} shapes")
for d in ("forward", "backward data", "backward filter"):
    print(f"{d:<16} {per_dir[d]:8.2f} ms")
print(f"{'total':<16} {sum(per_dir.values()):8.2f} ms")
