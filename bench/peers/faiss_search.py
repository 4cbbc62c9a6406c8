"""Peer for `npm run bench -- search`: faiss IndexFlatIP (Debian python3-faiss) exact top-k over the
same float32 .npy database, read in chunks. Prints one JSON object on stdout."""
import argparse
import json
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
args = parser.parse_args()

faiss.omp_set_num_threads(args.threads)
Q = np.ascontiguousarray(np.load(args.queries).astype(np.float32))
db = np.load(args.db, mmap_mode="r")
n, d = db.shape
index = faiss.IndexFlatIP(d)
t0 = time.perf_counter()
chunk = 65536
for s in range(0, n, chunk):
    index.add(np.array(db[s:s + chunk], dtype=np.float32))  # copy, so the mapping is not resident
load_s = time.perf_counter() - t0
del db

batch, single = [], []
for _ in range(args.repeat):
    t1 = time.perf_counter()
    D, I = index.search(Q, args.k)
    batch.append((time.perf_counter() - t1) * 1000)
for _ in range(args.repeat):
    t1 = time.perf_counter()
    index.search(Q[:1], args.k)
    single.append((time.perf_counter() - t1) * 1000)
np.save(args.out, I.astype(np.int32))
print(json.dumps({"faiss": faiss.__version__, "threads": args.threads, "n": n, "d": d, "load_s": load_s,
                  "batch_ms": batch, "single_ms": single,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
