/**
 * The few file operations the index's durability rests on: positional writes that finish or
 * throw, fsync of files and folders, and the atomic replacement of a small file. Every write and
 * sync goes through `io`, which tests replace to inject failures (ENOSPC, EIO).
 */
import {
  closeSync,
  fdatasyncSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { fileError, SuperglobalError } from "../errors.ts";

/**
 * The system calls behind every write (a test may swap them to simulate a full disk), and the
 * bytes per read or copy when loading or compacting vectors (a test may shrink it).
 */
export const io = {
  chunkBytes: 64 << 20,
  write: (fd: number, bytes: Uint8Array, offset: number, length: number, position: number) =>
    writeSync(fd, bytes, offset, length, position),
  datasync: (fd: number) => fdatasyncSync(fd),
};

/** Largest single read or write (the system's limit is just under 2 GiB). */
const MAX_IO = 1 << 30;

/** Writes all of `bytes` at `position` (loops over short writes). */
export function writeFully(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) {
    done += io.write(fd, bytes, done, Math.min(MAX_IO, bytes.length - done), position + done);
  }
}

/** Reads into `into` from `position` until it is full or the file ends; returns the bytes read. */
export function readFully(fd: number, into: Uint8Array, position: number): number {
  let done = 0;
  while (done < into.length) {
    const got = readSync(fd, into, done, Math.min(MAX_IO, into.length - done), position + done);
    if (got === 0) break;
    done += got;
  }
  return done;
}

/** Writes `data` as the whole of `path` (created or truncated) and fsyncs it. */
export function writeFileDurably(path: string, data: Uint8Array): void {
  const fd = openSync(path, "w");
  try {
    writeFully(fd, data, 0);
    io.datasync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes the content of a file written by someone else (a library) durable. */
export function syncFile(path: string): void {
  const fd = openSync(path, "r+");
  try {
    io.datasync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes a folder's entries (created, renamed, removed files) durable. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces `path` with `data` atomically and durably: a reader (or a crash) sees either the old
 * file or the new one, whole. Written to `<path>.tmp`, fsynced, renamed over, folder fsynced.
 */
export function replaceFileAtomically(path: string, data: Uint8Array): void {
  const tmp = `${path}.tmp`;
  writeFileDurably(tmp, data);
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/** The uniform error (fileError: IO_ERROR for ENOSPC, EIO, EACCES…) naming the file and what we were doing. */
export function ioError(file: string, doing: string, cause: unknown): SuperglobalError {
  if (cause instanceof SuperglobalError) return cause;
  return fileError(file, `could not ${doing}`, cause);
}
