/**
 * One writer per index: a LOCK file in the index folder naming its holder (pid, host, boot and
 * process start time). A second writer gets BUSY. A lock whose holder is gone (killed, crashed,
 * the machine rebooted, or the pid now belongs to another process) is stale and is taken over.
 *
 * The lock file appears whole or not at all: it is written under a private name and hard-linked
 * into place (link fails if the name exists). Taking over a stale lock is serialised by a second
 * lock, LOCK.break, held for the instant of the swap; a LOCK.break left by a dead process, or
 * older than BREAK_STALE_MS, is itself removed. Limits: a lock held from another host cannot be
 * checked, so it counts as live (the message says how to remove it by hand).
 */
import { randomBytes } from "node:crypto";
import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { fileError, SuperglobalError } from "../errors.ts";

interface Holder {
  pid: number;
  host: string;
  /** The kernel boot id (Linux), so a lock from before a reboot is stale. */
  boot: string | null;
  /** The holder's start time in clock ticks since boot (Linux /proc), so a reused pid is told apart. */
  start: number | null;
  /** Unique per acquisition. */
  token: string;
  since: string;
}

const BREAK_STALE_MS = 10_000;

export class WriterLock {
  private constructor(
    readonly path: string,
    private readonly token: string,
  ) {}

  /** Takes the lock of index folder `dir`, or throws BUSY naming the live holder. */
  static acquire(dir: string): WriterLock {
    try {
      return WriterLock.tryAcquire(dir);
    } catch (error) {
      if (error instanceof SuperglobalError) throw error;
      throw fileError(dir, "could not take the index's writer lock", error);
    }
  }

  private static tryAcquire(dir: string): WriterLock {
    const path = join(dir, "LOCK");
    const me = self();
    const mine = join(dir, `LOCK.${process.pid}.${me.token}`);
    writeFileSync(mine, JSON.stringify(me));
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        if (tryLink(mine, path)) return new WriterLock(path, me.token);
        const found = readHolder(path);
        if (found === "gone") continue; // released meanwhile: try again
        if (found !== undefined && isLive(found)) throw busy(dir, path, found);
        // Stale (or unreadable: a lock file is never written in place, so that is not a live one).
        if (takeOver(dir, path, mine, found)) return new WriterLock(path, me.token);
      }
      throw new SuperglobalError(
        "BUSY",
        `${dir}: index is in use (its lock keeps changing hands)`,
        {
          input: dir,
        },
      );
    } finally {
      unlinkQuietly(mine);
    }
  }

  /** Releases the lock (only if it is still ours). */
  release(): void {
    const found = readHolder(this.path);
    if (typeof found === "object" && found.token === this.token) unlinkQuietly(this.path);
  }
}

function self(): Holder {
  return {
    pid: process.pid,
    host: hostname(),
    boot: bootId(),
    start: startTime(process.pid),
    token: randomBytes(8).toString("hex"),
    since: new Date().toISOString(),
  };
}

/** Swaps a stale lock for ours under LOCK.break; false if the lock changed meanwhile. */
function takeOver(dir: string, path: string, mine: string, stale: Holder | undefined): boolean {
  const breakPath = join(dir, "LOCK.break");
  if (!tryLink(mine, breakPath)) {
    const breaker = readHolder(breakPath);
    const age = typeof breaker === "object" ? Date.now() - Date.parse(breaker.since) : Infinity;
    if (typeof breaker === "object" && isLive(breaker) && age < BREAK_STALE_MS) {
      throw busy(dir, path, breaker);
    }
    unlinkQuietly(breakPath);
    return false; // try again from the top
  }
  try {
    const now = readHolder(path);
    const same =
      now === "gone" ||
      (now === undefined && stale === undefined) ||
      (typeof now === "object" && now.token === stale?.token);
    if (!same) return false;
    if (now !== "gone") unlinkSync(path);
    return tryLink(mine, path);
  } finally {
    unlinkQuietly(breakPath);
  }
}

function tryLink(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

/** The holder named in a lock file, "gone" if there is none, undefined if it is unreadable. */
function readHolder(path: string): Holder | "gone" | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "gone";
    throw error;
  }
  try {
    const h = JSON.parse(text) as Holder;
    return typeof h.pid === "number" && typeof h.host === "string" ? h : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote `h` may still run. */
export function isLive(h: Holder): boolean {
  if (h.host !== hostname()) return true; // cannot tell: assume so
  const boot = bootId();
  if (h.boot !== null && boot !== null && h.boot !== boot) return false;
  try {
    process.kill(h.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
    // EPERM: it exists, under another user.
  }
  const stat = procStat(h.pid);
  if (stat === undefined) return process.platform !== "linux";
  if (stat.state === "Z" || stat.state === "X") return false; // killed, not yet reaped
  return h.start === null || stat.start === h.start;
}

function busy(dir: string, path: string, h: Holder): SuperglobalError {
  return new SuperglobalError(
    "BUSY",
    `${dir}: index is in use by process ${h.pid} on ${h.host} (since ${h.since}); ` +
      `wait for it to finish, or if that process is gone, delete ${path}`,
    { input: dir },
  );
}

function bootId(): string | null {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return null;
  }
}

/** State and start time (field 22) of a process from /proc/<pid>/stat. */
function procStat(pid: number): { state: string; start: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0] ?? "?", start: Number(fields[19]) };
}

function startTime(pid: number): number | null {
  return procStat(pid)?.start ?? null;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
