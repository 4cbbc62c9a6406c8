"""Peer for `npm run bench -- search`: faiss IndexFlatIP (Debian python3-faiss) exact top-k over the
same float32 .npy database, read in chunks. Prints one JSON object on stdout."""
import argparse
import json
import os
import resource
import time

import faiss
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--db", required=True)
parser.add_argument("--queries", required=True)
parser.add_argument("--k", type=int, default=100)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--out", required=True, help="ids [nq, k] int32 .npy")
parser.add_argument("--out-scores", help="scores [nq, k] float32 .npy")
args = parser.parse_args()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB


faiss.omp_set_num_threads(args.threads)
Q = np.ascontiguousarray(np.load(args.queries).astype(np.float32))
t0 = time.perf_counter()
with open(args.db, "rb") as f:
    # Plain reads into one reused buffer: a memory map would leave the file's pages in our RSS.
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    (n, d), fortran, dtype = read_header(f)
    assert dtype == np.float32 and not fortran, "expected a C-order float32 matrix"
    index = faiss.IndexFlatIP(d)
    chunk = np.empty((65536, d), dtype=np.float32)
    for s in range(0, n, len(chunk)):
        part = chunk[: min(len(chunk), n - s)]
        if f.readinto(memoryview(part).cast("B")) != part.nbytes:
            raise SystemExit(f"{args.db}: file is truncated")
        index.add(part)
del chunk
load_s = time.perf_counter() - t0
loaded_rss_mb = peak_rss_mib()

index.search(Q[:1], args.k)  # warm-up
batch, single = [], []
for _ in range(args.repeat):
    t1 = time.perf_counter()
    D, I = index.search(Q, args.k)
    batch.append((time.perf_counter() - t1) * 1000)
for r in range(args.repeat):
    t1 = time.perf_counter()
    index.search(Q[r % len(Q):r % len(Q) + 1], args.k)
    single.append((time.perf_counter() - t1) * 1000)
np.save(args.out, I.astype(np.int32))
if args.out_scores:
    np.save(args.out_scores, D.astype(np.float32))
try:
    compile_options = faiss.get_compile_options()
except AttributeError:
    compile_options = "unknown"
with open("/proc/self/maps") as maps:  # which BLAS faiss's sgemm calls went to
    blas = sorted({line.split()[-1] for line in maps if "blas" in line.split()[-1]})
usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds of all our threads
print(json.dumps({"faiss": faiss.__version__, "compile_options": compile_options, "blas": blas,
                  "threads": args.threads,
                  "n": int(n), "d": int(d), "load_s": load_s, "batch_ms": batch, "single_ms": single,
                  "loaded_rss_mb": loaded_rss_mb, "peak_rss_mb": peak_rss_mib(),
                  "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
