/**
 * A small async read/write lock: any number of readers at once, or one writer alone. Searches
 * read the index; adding images writes it (the store renumbers its rows on commit, so a search
 * must never straddle a commit). Writers are preferred: once a writer waits, new readers queue
 * behind it, so a steady stream of searches cannot starve an add.
 */
export class ReadWriteLock {
  private readers = 0;
  private writing = false;
  private readonly waiting: Array<{ write: boolean; wake: () => void }> = [];

  /** Runs `fn` while holding a read lock. */
  async read<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.writing || this.waiting.length > 0) {
      await new Promise<void>((wake) => this.waiting.push({ write: false, wake }));
    } else {
      this.readers += 1;
    }
    try {
      return await fn();
    } finally {
      this.readers -= 1;
      this.next();
    }
  }

  /** Runs `fn` while holding the write lock (no reader or other writer at the same time). */
  async write<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.writing || this.readers > 0 || this.waiting.length > 0) {
      await new Promise<void>((wake) => this.waiting.push({ write: true, wake }));
    } else {
      this.writing = true;
    }
    try {
      return await fn();
    } finally {
      this.writing = false;
      this.next();
    }
  }

  /** Holders now: readers, or -1 while a writer holds it. */
  get holders(): number {
    return this.writing ? -1 : this.readers;
  }

  /** Wakes the next writer, or every reader at the head of the queue. */
  private next(): void {
    if (this.writing || this.readers > 0) return;
    const head = this.waiting[0];
    if (head === undefined) return;
    if (head.write) {
      this.waiting.shift();
      this.writing = true;
      head.wake();
      return;
    }
    while (this.waiting[0] !== undefined && !this.waiting[0].write) {
      const reader = this.waiting.shift() as { wake: () => void };
      this.readers += 1;
      reader.wake();
    }
  }
}
