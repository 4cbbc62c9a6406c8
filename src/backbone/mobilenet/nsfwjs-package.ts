/**
 * Where the installed nsfwjs package keeps the model we convert, and its version. Its `exports`
 * map blocks deep imports (`nsfwjs/dist/models/…`), so we resolve the package's entry point and
 * walk up to the folder whose package.json is nsfwjs's, then read the files from there.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { SuperglobalError } from "../../errors.ts";

/** The model folder inside the package: MobileNetV2-1.4 (224), nsfwjs's "mid" model. */
export const NSFWJS_MODEL = "mobilenet_v2_mid";

export interface NsfwjsPackage {
  /** The package folder (holds package.json). */
  root: string;
  version: string;
  /** The folder of model.min.js and its group1-shard*.min.js files. */
  modelDir: string;
}

/** The installed nsfwjs package; NOT_FOUND when it cannot be resolved from here. */
export function nsfwjsPackage(): NsfwjsPackage {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve("nsfwjs");
  } catch (cause) {
    throw new SuperglobalError(
      "NOT_FOUND",
      "nsfwjs: the package is not installed (it provides the default network's weights)",
      { input: "nsfwjs", cause },
    );
  }
  for (let dir = dirname(entry); ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest)) {
      const pkg = JSON.parse(readFileSync(manifest, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "nsfwjs" && typeof pkg.version === "string") {
        return {
          root: dir,
          version: pkg.version,
          modelDir: join(dir, "dist", "models", NSFWJS_MODEL),
        };
      }
    }
    if (dirname(dir) === dir) break;
  }
  throw new SuperglobalError("NOT_FOUND", `${entry}: no nsfwjs package.json above it`, {
    input: entry,
  });
}
