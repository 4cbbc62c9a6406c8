"""Peer for `npm run bench -- index`: the same index as one SQLite table (Debian python3's sqlite3),
one row per image with its descriptor as a BLOB. Prints one JSON object on stdout.

  build DB POOL N DIM BATCH PAGE   rows i = pool[i % pool_rows], in transactions of BATCH rows
  commits DB POOL DIM COUNT PAGE   COUNT one-row transactions (the small-commit rate)
  open DB N DIM                     read every path/size/mtime/hash and all vectors into one buffer

Durability as ours: WAL with synchronous=FULL (every commit fsynced)."""
import json
import os
import resource
import sqlite3
import sys
import time


def connect(db, page):
    con = sqlite3.connect(db, isolation_level=None)
    if page:
        con.execute(f"PRAGMA page_size={int(page)}")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS images(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL,"
        " size INTEGER, mtime REAL, hash BLOB, vec BLOB NOT NULL)"
    )
    return con


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(i, pool, row_bytes, pool_rows):
    k = i % pool_rows
    return (
        f"/photos/2024/IMG_{i:07d}.jpg",
        1000000 + i,
        1.7e12 + i,
        i.to_bytes(32, "little"),
        pool[k * row_bytes : (k + 1) * row_bytes],
    )


def main():
    cmd = sys.argv[1]
    if cmd == "build":
        db, pool_file, n, dim, batch, page = sys.argv[2:8]
        n, dim, batch = int(n), int(dim), int(batch)
        pool = open(pool_file, "rb").read()
        row_bytes = dim * 4
        pool_rows = len(pool) // row_bytes
        con = connect(db, page)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO images(path, size, mtime, hash, vec) VALUES (?,?,?,?,?)",
                (row(i, pool, row_bytes, pool_rows) for i in range(start, min(n, start + batch))),
            )
            con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        s = time.perf_counter() - t0
        con.close()
        print(json.dumps({"rows": n, "seconds": s, "bytes": os.path.getsize(db)}))
    elif cmd == "commits":
        db, pool_file, dim, count, page = sys.argv[2:7]
        dim, count = int(dim), int(count)
        pool = open(pool_file, "rb").read()
        row_bytes = dim * 4
        con = connect(db, page)
        t0 = time.perf_counter()
        for i in range(count):
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO images(path, size, mtime, hash, vec) VALUES (?,?,?,?,?)",
                row(i, pool, row_bytes, len(pool) // row_bytes),
            )
            con.execute("COMMIT")
        s = time.perf_counter() - t0
        con.close()
        print(json.dumps({"commits": count, "seconds": s}))
    elif cmd == "open":
        db, n, dim = sys.argv[2:5]
        n, dim = int(n), int(dim)
        row_bytes = dim * 4
        t0 = time.perf_counter()
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        vectors = bytearray(n * row_bytes)
        view = memoryview(vectors)
        paths = {}
        meta = []
        r = 0
        for path, size, mtime, h, vec in con.execute(
            "SELECT path, size, mtime, hash, vec FROM images ORDER BY id"
        ):
            paths[path] = r
            meta.append((size, mtime, h))
            view[r * row_bytes : (r + 1) * row_bytes] = vec
            r += 1
        s = time.perf_counter() - t0
        con.close()
        print(json.dumps({"rows": r, "open_ms": s * 1000, "peak_rss_mb": peak_rss_mib()}))


main()
