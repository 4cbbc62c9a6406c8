"""Peer for `npm run bench -- extract`: the official SuperGlobal model (PyTorch, CPU) on the same
images and weights. Imports the official code from the folder given by --official (never copied
into this project). Prints one JSON object on stdout: per-image timings (ms) and descriptors."""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--official", required=True)
parser.add_argument("--checkpoint", required=True)
parser.add_argument("--depth", type=int, default=50)
parser.add_argument("--scales", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeat", type=int, default=1)
parser.add_argument("--out", required=True, help="descriptors .npy [N, 2048] float32")
parser.add_argument("images", nargs="+")
args = parser.parse_args()

sys.path.insert(0, os.path.abspath(args.official))
from model.CVNet_Rerank_model import CVNet_Rerank  # noqa: E402

torch.set_num_threads(args.threads)  # Debian's torch defaults to 1 thread here

MEAN = [0.406, 0.456, 0.485]
SD = [0.225, 0.224, 0.229]


def prepare(path):
    # What the official test/dataset.py does: cv2.imread (BGR), CHW, /255, per-channel BGR norm.
    im = cv2.imread(path).astype(np.float32)
    im = im.transpose([2, 0, 1]) / 255.0
    for c in range(3):
        im[c] = (im[c] - MEAN[c]) / SD[c]
    return torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)).unsqueeze(0)


t0 = time.perf_counter()
model = CVNet_Rerank(args.depth, 2048, True)
state = torch.load(args.checkpoint, map_location="cpu")
state = state.get("model_state", state)
own = model.state_dict()
own.update({k: v for k, v in state.items() if k in own and own[k].size() == v.size()})
model.load_state_dict(own)
model.eval()
load_ms = (time.perf_counter() - t0) * 1000

rows = []
descs = []
with torch.inference_mode():
    # warm-up on the first image (allocator, thread pool)
    model.extract_global_descriptor(prepare(args.images[0]), True, True, True, args.scales)
    for path in args.images:
        best = None
        for _ in range(args.repeat):
            t1 = time.perf_counter()
            x = prepare(path)
            t2 = time.perf_counter()
            d = model.extract_global_descriptor(x, True, True, True, args.scales)
            d = torch.nn.functional.normalize(d, p=2, dim=1)
            t3 = time.perf_counter()
            cur = {"decode_ms": (t2 - t1) * 1000, "model_ms": (t3 - t2) * 1000, "total_ms": (t3 - t1) * 1000}
            if best is None or cur["total_ms"] < best["total_ms"]:
                best = cur
        rows.append({"image": path, **best})
        descs.append(d.numpy()[0])

# The backbone alone (stem..s4) at the three scale sizes of the first image, to tell the runtime's
# share from the pipeline's: same weights, same sizes as the full run.
backbone_ms = {}
enc = model.encoder_q
with torch.inference_mode():
    x0 = prepare(args.images[0])
    h, w = x0.shape[-2:]
    for s in [0.7071, 1.0, 1.4142]:
        xs = torch.nn.functional.interpolate(x0, size=(int(h * s), int(w * s)), mode="bilinear", align_corners=False)
        enc.s4(enc.s3(enc.s2(enc.s1(enc.stem(xs)))))
        runs = []
        for _ in range(max(2, args.repeat)):
            t = time.perf_counter()
            enc.s4(enc.s3(enc.s2(enc.s1(enc.stem(xs)))))
            runs.append((time.perf_counter() - t) * 1000)
        backbone_ms[f"{int(h * s)}x{int(w * s)}"] = min(runs)

np.save(args.out, np.stack(descs).astype(np.float32))
peak_mb = None
try:
    import resource
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
except Exception:
    pass
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "load_ms": load_ms,
                  "peak_rss_mb": peak_mb, "images": rows, "backbone_ms": backbone_ms}))
