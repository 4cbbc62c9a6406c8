/**
 * Child process of the index store's crash tests: `node --import tsx index-writer.ts DIR DIM SEED
 * TRIAL` adds entries in small batches (and now and then removes one and compacts) until it is
 * killed, printing a line after every commit that returned:
 *   "add <path>\t<path>..."  or  "remove <path>"  or  "compact"
 * and "removing <path>" before a removal.
 */
import { writeSync } from "node:fs";
import { IndexStore } from "../../src/index/index-store.ts";
import { descriptorFor, hashOf, seeded } from "./index-fixtures.ts";

/**
 * Writes a line to stdout before returning: process.stdout may queue a write in memory when the
 * pipe is full, and a SIGKILL then loses it (the parent would miss a commit that happened).
 */
function say(line: string): void {
  const bytes = Buffer.from(`${line}\n`, "utf8");
  for (let done = 0; done < bytes.length; ) {
    try {
      done += writeSync(1, bytes, done);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
    }
  }
}

const [dir, dimText, seedText, trial] = process.argv.slice(2);
const dim = Number(dimText);
const random = seeded(Number(seedText));
const store = IndexStore.openOrCreate(dir!, { model: "test-model", dim });
say("ready");
const mine: string[] = [];
for (let i = 0; ; ) {
  const batch: string[] = [];
  const n = 1 + Math.floor(random() * 4);
  for (let k = 0; k < n; k++, i++) {
    const path = `/photos/trial ${trial}/ïmg ${i}.jpg`;
    store.put({ path, size: i, mtimeMs: i * 1.5, hash: hashOf(path) }, descriptorFor(path, dim));
    batch.push(path);
  }
  store.commit();
  mine.push(...batch);
  say(`add ${batch.join("\t")}`);
  if (random() < 0.3 && mine.length > 2) {
    const victim = mine.splice(Math.floor(random() * mine.length), 1)[0]!;
    say(`removing ${victim}`); // if killed from here on, it may be gone or not
    store.remove([victim]);
    say(`remove ${victim}`);
    if (store.compactIfNeeded(0.05)) say("compact");
  }
}
