/**
 * Where the test data lives: ../shared beside the checkout (or $SUPERGLOBAL_SHARED). Tests that
 * need it call `requireShared(t)`, which skips them with a reason when it is absent.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export const sharedDir = process.env["SUPERGLOBAL_SHARED"] ?? resolve(repoRoot, "..", "shared");
export const fixturesDir = join(sharedDir, "fixtures", "superglobal-r50");
export const assetsDir = join(sharedDir, "assets");
export const hasShared = existsSync(join(fixturesDir, "manifest.json"));
export const missingReason = `test data not found at ${sharedDir} (set SUPERGLOBAL_SHARED)`;

/** Options for `test(name, sharedOnly, fn)`: skips with a reason where the shared data is absent. */
export const sharedOnly = hasShared ? {} : { skip: missingReason };

export function fixture(name: string): string {
  return join(fixturesDir, name);
}

export interface ManifestArray {
  file: string;
  shape: number[];
  dtype: string;
}

/** manifest.json, with Python's bare NaN tokens (excluded queries' AP) read as null. */
// biome-ignore lint/suspicious/noExplicitAny: the manifest is test data with a loose schema
export function manifest(): any {
  const text = readFileSync(fixture("manifest.json"), "utf8");
  return JSON.parse(text.replace(/\bNaN\b/g, "null"));
}
