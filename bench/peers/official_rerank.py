"""Peer for `npm run bench -- rerank`: the official MDescAug + RerankwMDA modules (PyTorch, CPU,
float32), imported from the folder given by --official, on the same X, Q and initial ranks.
Prints one JSON object on stdout (timings) and writes the final ranks [nq, N] as int32 .npy."""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--official", required=True)
parser.add_argument("--db", required=True)
parser.add_argument("--queries", required=True)
parser.add_argument("--ranks", required=True, help="initial ranks [nq, N] int32 (query-major)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--M", type=int, default=400)
parser.add_argument("--K", type=int, default=9)
parser.add_argument("--beta", type=float, default=0.15)
parser.add_argument("--out", required=True)
args = parser.parse_args()

sys.path.insert(0, os.path.abspath(args.official))
from modules.reranking.MDescAug import MDescAug  # noqa: E402
from modules.reranking.RerankwMDA import RerankwMDA  # noqa: E402

torch.set_num_threads(args.threads)
torch.Tensor.cuda = lambda self, *a, **k: self  # the official modules call .cuda(); run on CPU

X = torch.from_numpy(np.load(args.db).astype(np.float32))
Q = torch.from_numpy(np.load(args.queries).astype(np.float32))
ranks = torch.from_numpy(np.load(args.ranks).astype(np.int64)).T.contiguous()  # official: [N, nq]
loaded_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (ru_maxrss is KiB)

mdesc = MDescAug(M=args.M, K=args.K, beta=args.beta)
rerank = RerankwMDA(M=args.M, K=args.K, beta=args.beta)
times = []
with torch.inference_mode():
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = mdesc(X, Q, ranks)
        final = rerank(ranks, *out)
        times.append((time.perf_counter() - t0) * 1000)
np.save(args.out, final.T.numpy().astype(np.int32))
usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds of all our threads
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "runs_ms": times,
                  "nq": int(Q.shape[0]), "loaded_rss_mb": loaded_rss_mb,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
