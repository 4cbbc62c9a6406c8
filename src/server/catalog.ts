/**
 * Stable integer ids for the indexed images, for the server's lifetime: the images present at
 * start are numbered in the index's row order, images added later get the next numbers, and an
 * image keeps its id when the store renumbers its rows. Clients only ever name images by id, never
 * by path, and `file(id)` hands out a path only after checking that its real path (symbolic links
 * resolved) is still the file that was indexed: a link re-pointed after indexing, or a path that
 * now leads elsewhere, is refused.
 */
import { realpathSync } from "node:fs";
import { realpath, stat } from "node:fs/promises";

export class Catalog {
  private readonly pathOf: string[] = [];
  /** The real path of each id as it was when the id was given (null: the file was missing). */
  private readonly realOf: Array<string | null> = [];
  private readonly idOf = new Map<string, number>();

  constructor(paths: readonly string[] = []) {
    this.sync(paths);
  }

  /** Ids given so far (ids are 0..count-1). */
  get count(): number {
    return this.pathOf.length;
  }

  /** Gives ids to paths not seen before (in the order given); returns the new ids. */
  sync(paths: readonly string[]): number[] {
    const added: number[] = [];
    for (const path of paths) {
      if (this.idOf.has(path)) continue;
      const id = this.pathOf.length;
      this.pathOf.push(path);
      this.realOf.push(realOrNull(path));
      this.idOf.set(path, id);
      added.push(id);
    }
    return added;
  }

  id(path: string): number | undefined {
    return this.idOf.get(path);
  }

  path(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.pathOf[id] : undefined;
  }

  /**
   * The real path to read for `id`, or undefined when the id is unknown, the file is gone or not a
   * regular file, or its real path is neither the one recorded for it nor another indexed path.
   */
  async file(id: number): Promise<string | undefined> {
    const path = this.path(id);
    if (path === undefined) return undefined;
    let real: string;
    try {
      real = await realpath(path);
      if (!(await stat(real)).isFile()) return undefined;
    } catch {
      return undefined;
    }
    const recorded = this.realOf[id];
    if (real === recorded || (recorded === null && real === path) || this.idOf.has(real)) {
      return real;
    }
    return undefined;
  }
}

function realOrNull(path: string): string | null {
  try {
    return realpathSync(path);
  } catch {
    return null;
  }
}
