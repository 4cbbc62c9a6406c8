/**
 * The superglobal library: what `import … from "superglobal"` gives, in pipeline order.
 */

export { Backbone, buildModel } from "./backbone/backbone.ts";
export { loadCheckpoint } from "./checkpoint/load.ts";
export type { StateDict, Tensor } from "./checkpoint/state-dict.ts";
export {
  DESCRIPTOR_DIM,
  type ExtractInput,
  Extractor,
  type StageTimes,
} from "./descriptor/extractor.ts";
export { type ExtractorOptions, SCALE_SETS } from "./descriptor/options.ts";
export { DescriptorStore } from "./descriptor/store.ts";
export { SuperglobalError } from "./errors.ts";
export { type GroundTruth, readGroundTruth } from "./eval/ground-truth.ts";
export {
  type RevisitopRunOptions,
  type RevisitopRunResult,
  runRevisitop,
} from "./eval/protocol.ts";
export {
  computeMap,
  evaluateRevisitop,
  type Protocol,
  type ProtocolResult,
} from "./eval/revisitop-map.ts";
export type { Box } from "./image/crop.ts";
export { type BgrImage, decodeImage } from "./image/decode.ts";
export { bruteForceSearch } from "./index/brute-force.ts";
export { ExactSearch, type Float32Matrix, type SearchResult } from "./index/exact-search.ts";
export { readNpy, writeNpy } from "./io/npy.ts";
export {
  type Candidates,
  type RerankResult,
  SuperGlobalReranker,
  type SuperGlobalRerankOptions,
} from "./rerank/superglobal-rerank.ts";
