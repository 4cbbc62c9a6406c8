/**
 * One error type for everything superglobal rejects, so callers can tell our errors (bad input,
 * bad file, bad argument) from bugs. The message always names the input it is about.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT" // a public argument has the wrong type or value
  | "BAD_FILE" // a file exists but its content is not what it should be
  | "NOT_FOUND" // a file, key or id that must exist does not
  | "BAD_IMAGE" // an image could not be decoded, or is unusable
  | "UNSUPPORTED" // valid input that we do not handle (yet)
  | "BUSY" // a resource is held by another live process (e.g. an index another writer has open)
  | "MODEL_MISMATCH" // stored data was made by another model (or dimension) than the caller's
  | "IO_ERROR"; // the system refused a read or write (disk full, I/O error); names the file

export class SuperglobalError extends Error {
  readonly code: ErrorCode;
  /** The file, argument or item the error is about. */
  readonly input: string | undefined;

  constructor(code: ErrorCode, message: string, options?: { input?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SuperglobalError";
    this.code = code;
    this.input = options?.input;
  }
}

/** Throws INVALID_ARGUMENT in the uniform style: "Expected <what> for <name> but received <value>". */
export function invalidArgument(name: string, expected: string, actual: unknown): never {
  throw new SuperglobalError(
    "INVALID_ARGUMENT",
    `Expected ${expected} for ${name} but received ${describe(actual)}`,
    { input: name },
  );
}

function describe(value: unknown): string {
  if (typeof value === "string")
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} of ${value.byteLength} bytes`;
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** A BAD_FILE error in the uniform style: "<file>: <what is wrong>". */
export function badFile(file: string, what: string): SuperglobalError {
  return new SuperglobalError("BAD_FILE", `${file}: ${what}`, { input: file });
}

/** What a system error code means for the user, in words. */
const SYSTEM_REASONS: Record<string, string> = {
  ENOENT: "no such file or folder",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EROFS: "read-only file system",
  EISDIR: "it is a folder, not a file",
  ENOTDIR: "a part of the path is not a folder",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EIO: "input/output error",
};

/**
 * The one mapping of a failed file operation (`cause`, a Node system error) to our error, named
 * "<path>: <what> (<reason>)": ENOENT is NOT_FOUND; ENOTDIR (a file where the path needs a
 * folder) is INVALID_ARGUMENT; EISDIR (a folder where a file should be) is `badCode` (BAD_FILE, or
 * BAD_IMAGE for images), as is an error that is not a system error; every other refusal of the
 * system (EACCES and EPERM: no permission; EROFS, ENOSPC, EIO, …) is IO_ERROR.
 */
export function fileError(
  path: string,
  what: string,
  cause: unknown,
  badCode: "BAD_FILE" | "BAD_IMAGE" = "BAD_FILE",
): SuperglobalError {
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  let code: ErrorCode = "IO_ERROR";
  if (errno === undefined || errno === "EISDIR") code = badCode;
  else if (errno === "ENOENT") code = "NOT_FOUND";
  else if (errno === "ENOTDIR") code = "INVALID_ARGUMENT";
  const reason =
    (errno === undefined ? undefined : SYSTEM_REASONS[errno]) ??
    (cause instanceof Error ? cause.message : String(cause));
  return new SuperglobalError(code, `${path}: ${what} (${reason})`, { input: path, cause });
}

export function assertInteger(
  name: string,
  value: unknown,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    invalidArgument(name, `an integer between ${min} and ${max}`, value);
  }
  return value;
}

export function assertNumber(
  name: string,
  value: unknown,
  min = -Infinity,
  max = Infinity,
): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    invalidArgument(name, `a finite number between ${min} and ${max}`, value);
  }
  return value;
}

export function assertOneOf<T>(name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) invalidArgument(name, `one of ${allowed.join(", ")}`, value);
  return value as T;
}
