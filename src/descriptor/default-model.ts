/**
 * The default model, which needs no download: nsfwjs's MobileNetV2-1.4 (shipped in the npm
 * package) with the SuperGlobal head on its last feature map, whose FC is a PCA-whitening learned
 * from real photos (`models/default-whitening/`, with its provenance in the README there). It is
 * assembled at first use and kept in the user cache folder (runtime/model-cache.ts).
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { defaultNetwork, defaultNetworkSource } from "../backbone/mobilenet/default-network.ts";
import type { HeadOptions, HeadWeights } from "../pooling/head-graph.ts";
import { readWhitening, type Whitening, whiteningHead } from "../pooling/whitening.ts";
import { CACHE_KEY, type CachedModel, cachedModel } from "../runtime/model-cache.ts";
import { assembleModel } from "./model.ts";

/** The whitening that ships with the package (two levels up from src/descriptor or dist/descriptor). */
export const DEFAULT_WHITENING_DIR = fileURLToPath(
  new URL("../../models/default-whitening", import.meta.url),
);

export interface DefaultModelOptions {
  head: HeadOptions;
  /** A whitening folder (see pooling/whitening.ts); null: none (the FC is the identity). */
  whitening: string | null;
  /** Where the assembled model is cached (default: the user cache folder). */
  cacheDir?: string;
}

/** The default model's ONNX bytes, from the cache when it holds this exact model. */
export async function defaultModel(options: DefaultModelOptions): Promise<CachedModel> {
  const whitening = options.whitening === null ? null : readWhitening(options.whitening);
  const key = createHash("sha256")
    .update(
      JSON.stringify({
        network: defaultNetworkSource(),
        head: options.head,
        whitening: whitening === null ? null : whiteningDigest(whitening),
      }),
    )
    .digest("hex");
  return cachedModel(
    `default-${key.slice(0, 16)}`,
    key,
    (cacheKey) => {
      const network = defaultNetwork();
      network.graph.metadata(CACHE_KEY, cacheKey);
      const weights =
        whitening === null ? identityHead(network.channels) : whiteningHead(whitening);
      return assembleModel(network, { options: options.head, weights });
    },
    options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir },
  );
}

function identityHead(channels: number): HeadWeights {
  const fcWeight = new Float32Array(channels * channels);
  for (let i = 0; i < channels; i++) fcWeight[i * channels + i] = 1;
  return { fcWeight, fcBias: new Float32Array(channels), poolP: 3 };
}

function whiteningDigest(w: Whitening): string {
  const hash = createHash("sha256");
  for (const a of [w.mean, w.vectors, w.scales, Float64Array.of(w.rest)]) {
    hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  return hash.digest("hex");
}
