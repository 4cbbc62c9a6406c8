/**
 * The superglobal library: what `import … from "superglobal"` gives, in pipeline order.
 */

export {
  type AddEvent,
  type AddOptions,
  type AddSummary,
  Index,
  type IndexOpenOptions,
  type ModelSpec,
  RERANK_MODES,
  type RerankMode,
  type SearchHit,
  type SearchOptions,
  type SearchResult as IndexSearchResult,
} from "./app/photo-index.ts";
export { findImages, looksLikeImage, type ScanOptions } from "./app/scan.ts";
export { loadCheckpoint } from "./checkpoint/load.ts";
export type { StateDict, Tensor } from "./checkpoint/state-dict.ts";
export type { Float32Matrix, VectorMatrix, Vectors } from "./core/matrix.ts";
export {
  type BatchExtractor,
  type DescriptorCache,
  type ExtractFailure,
  type ExtractItem,
  type ExtractManyOptions,
  type ExtractManyResult,
  type ExtractProgress,
  extractKey,
  extractMany,
  type StagedExtractor,
} from "./descriptor/extract-many.ts";
export {
  DESCRIPTOR_DIM,
  type ExtractInput,
  Extractor,
  type StageTimes,
} from "./descriptor/extractor.ts";
export { buildModel, DescriptorModel } from "./descriptor/model.ts";
export { type ExtractorOptions, SCALE_SETS } from "./descriptor/options.ts";
export {
  type ModelStatus,
  modelStatuses,
  modelsDir,
  type PullOptions,
  type PullResult,
  pullModel,
} from "./descriptor/pull.ts";
export { MODELS, type ModelEntry } from "./descriptor/registry.ts";
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
export { type Box, type ClippedBox, clipBox } from "./image/crop.ts";
export { type BgrImage, decodeImage } from "./image/decode.ts";
export {
  type FailedEntry,
  type IndexEntry,
  type IndexInfo,
  IndexStore,
  type VectorDtype,
} from "./index/index-store.ts";
export { DescriptorStore } from "./index/store.ts";
export {
  type DownloadOptions,
  type DownloadProgress,
  type DownloadResult,
  download,
} from "./io/download.ts";
export { readNpy, writeNpy } from "./io/npy.ts";
export { AdaptiveReranker, type AdaptiveRerankOptions } from "./rerank/adaptive-rerank.ts";
export type { Reranker } from "./rerank/reranker.ts";
export {
  type Candidates,
  type RerankResult,
  SuperGlobalReranker,
  type SuperGlobalRerankOptions,
} from "./rerank/superglobal-rerank.ts";
export { bruteForceSearch } from "./search/brute-force.ts";
export { ExactSearch, type SearchResult } from "./search/exact-search.ts";
