/**
 * Loads a `torch.save` checkpoint (zip or legacy format) into a StateDict, without Python: the
 * public entry points, format detection and error wrapping. The containers are read by
 * torch-zip.ts and torch-legacy.ts, through byte-source.ts; what the pickle means (storages,
 * dtypes, tensors, the state dict entry) is torch-tensors.ts.
 */
import { closeSync, fstatSync, openSync } from "node:fs";
import { endianness } from "node:os";
import { badFile, fileError, invalidArgument, SuperglobalError } from "../errors.ts";
import { unpickle } from "../io/pickle.ts";
import { type ByteSource, bytesSource, fileSource } from "./byte-source.ts";
import type { StateDict } from "./state-dict.ts";
import { readTorchLegacy } from "./torch-legacy.ts";
import { TorchModel } from "./torch-tensors.ts";
import { openTorchZip } from "./torch-zip.ts";

/** Loads the tensors of the checkpoint at `path` (CVNet `.pyth`, any `torch.save` of a state dict). */
export function loadCheckpoint(path: string): StateDict {
  if (typeof path !== "string" || path.length === 0) {
    invalidArgument("path", "a checkpoint file path", path);
  }
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw fileError(path, "cannot open the checkpoint", err);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) {
      throw new SuperglobalError("BAD_FILE", `${path}: not a regular file`, { input: path });
    }
    return loadFromSource(fileSource(fd, stat.size, path));
  } finally {
    closeSync(fd);
  }
}

/** Like loadCheckpoint, for a checkpoint already in memory; `source` names it in errors. */
export function loadCheckpointFromBytes(bytes: Uint8Array, source: string): StateDict {
  if (!(bytes instanceof Uint8Array)) invalidArgument("bytes", "a Uint8Array", bytes);
  if (typeof source !== "string") invalidArgument("source", "a string", source);
  return loadFromSource(bytesSource(bytes, source));
}

function loadFromSource(src: ByteSource): StateDict {
  if (endianness() !== "LE") {
    throw new SuperglobalError("UNSUPPORTED", "checkpoints load on little-endian machines only", {
      input: src.name,
    });
  }
  try {
    return loadChecked(src);
  } catch (err) {
    if (err instanceof SuperglobalError) throw err;
    throw new SuperglobalError(
      "BAD_FILE",
      `${src.name}: cannot read the checkpoint: ${(err as Error)?.message ?? String(err)}`,
      { input: src.name, cause: err },
    );
  }
}

function loadChecked(src: ByteSource): StateDict {
  if (src.size === 0) throw badFile(src.name, "the file is empty");
  const head = src.read(0, Math.min(src.size, 512));
  const model = new TorchModel(src.name);
  if (head[0] === 0x50 && head[1] === 0x4b) {
    // "PK": the zip format.
    const zip = openTorchZip(src);
    const root = unpickle(zip.readRecord("data.pkl"), model.options);
    return model.stateDict(root, (key, bytes) => zip.readRecord(`data/${key}`, bytes));
  }
  if (head[0] === 0x80) {
    // PROTO opcode: the legacy format (a stream of pickles).
    const legacy = readTorchLegacy(src, model.options, (key) => model.elementSize(key));
    return model.stateDict(legacy.root, (key) => legacy.readStorage(key));
  }
  if (head.length >= 262 && latin1(head.subarray(257, 262)) === "ustar") {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: a tar archive (torch < 0.4 checkpoint format) is not supported; re-save it with a newer torch`,
      { input: src.name },
    );
  }
  const shown = [...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  throw badFile(
    src.name,
    `not a PyTorch checkpoint (starts with bytes ${shown}; expected a zip archive or a pickle)`,
  );
}

function latin1(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}
