/**
 * The package's version, read at run time from its package.json, so it is written in one place.
 * This file sits one folder below the package root both as source (src/version.ts) and as built
 * code (dist/version.js), so the same relative path finds package.json in the repository and in
 * an installed copy.
 */
import { readFileSync } from "node:fs";

export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;
