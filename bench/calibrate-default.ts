/**
 * `npm run bench -- calibrate-default`: calibrates the default model's int8 activation ranges and
 * writes them where the package reads them (`models/default-int8/ranges.json`, with a provenance
 * README). The photos are the 54 debian-photos of the shared assets (`$SUPERGLOBAL_SHARED/assets`
 * or `../shared/assets`, never part of the project): real photos of many kinds, none of them in
 * the quality benchmark (multiview-dev), so int8's measured mAP change is not flattered.
 * Deterministic: the same photos in name order give the same ranges.
 */
import { readdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { defaultNetworkSource } from "../src/backbone/mobilenet/default-network.ts";
import { calibrateRanges } from "../src/descriptor/calibration.ts";
import { DEFAULT_WHITENING_DIR, defaultModel } from "../src/descriptor/default-model.ts";
import {
  CALIBRATION,
  DEFAULT_RANGES_FILE,
  QUANTIZE,
  type RangesFile,
} from "../src/descriptor/int8-model.ts";
import { readModelInfo } from "../src/descriptor/model-metadata.ts";
import { MODELS } from "../src/descriptor/registry.ts";
import { quantizationPoints } from "../src/runtime/quantize-graph.ts";
import { sharedAssetsDir } from "./learn-whitening.ts";

export async function main(_argv: string[]): Promise<void> {
  const root = join(sharedAssetsDir, "debian-photos");
  const photos = readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort()
    .flatMap((d) =>
      readdirSync(join(root, d))
        .filter((f) => /\.jpe?g$/i.test(f))
        .sort()
        .map((f) => join(root, d, f)),
    );
  const defaults = MODELS["default"]!.defaults;
  const { model } = await defaultModel({
    head: { rgem: defaults.rgem, gemp: defaults.gemp },
    whitening: DEFAULT_WHITENING_DIR,
  });
  const info = readModelInfo(model, "default");
  const points = quantizationPoints(model, QUANTIZE);
  process.stdout.write(`calibrating ${points.length} tensors on ${photos.length} photos\n`);
  const t = performance.now();
  const ranges = await calibrateRanges(model, points, photos, {
    ...CALIBRATION,
    input: info.input,
  });
  const out: RangesFile = {
    network: defaultNetworkSource(),
    settings: { ...CALIBRATION, maxImages: undefined, quantize: QUANTIZE },
    images: photos.map((p) => relative(sharedAssetsDir, p)),
    ranges: Object.fromEntries(points.map((p) => [p, [ranges[p]!.min, ranges[p]!.max]])),
  };
  writeFileSync(DEFAULT_RANGES_FILE, `${JSON.stringify(out, null, 1)}\n`);
  process.stdout.write(
    `wrote ${DEFAULT_RANGES_FILE} in ${((performance.now() - t) / 1000).toFixed(0)} s\n`,
  );
}
