/**
 * The check every command runs on its output paths before it starts: an output that cannot be
 * written is found in a second, not after an hour of extraction.
 */
import { accessSync, constants, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileError, invalidArgument, SuperglobalError } from "../errors.ts";

/**
 * Throws unless `path` can be written as a file: an existing file we may write, or a new file in
 * an existing folder we may write in. Nothing is created. The error names the path and says why:
 * NOT_FOUND (its folder does not exist), IO_ERROR (no permission, a read-only file system),
 * BAD_FILE (it is a folder) or INVALID_ARGUMENT (a part of the path is a file).
 */
export function assertWritable(path: string): void {
  if (typeof path !== "string" || path === "") invalidArgument("path", "an output file path", path);
  let isFolder: boolean;
  try {
    isFolder = statSync(path).isDirectory();
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== "ENOENT") {
      throw fileError(path, "cannot write", cause);
    }
    // A new file: its folder must exist and take new files.
    const folder = dirname(resolve(path));
    try {
      accessSync(folder, constants.W_OK | constants.X_OK);
    } catch (folderCause) {
      if ((folderCause as NodeJS.ErrnoException).code === "ENOENT") {
        throw new SuperglobalError(
          "NOT_FOUND",
          `${path}: cannot write (the folder ${folder} does not exist)`,
          { input: path, cause: folderCause },
        );
      }
      throw fileError(path, "cannot write", folderCause);
    }
    return;
  }
  if (isFolder) {
    throw new SuperglobalError("BAD_FILE", `${path}: cannot write (it is a folder, not a file)`, {
      input: path,
    });
  }
  try {
    accessSync(path, constants.W_OK);
  } catch (cause) {
    throw fileError(path, "cannot write", cause);
  }
}
