/**
 * Which files of a folder are images: found by their first bytes (the formats the decoder reads),
 * not by extension, so `IMG_0001` without one is found and `notes.jpg` holding text is not.
 * Recursive by default; hidden files and folders (".name") are skipped; symbolic links are
 * followed for files but not for folders (no cycles); paths come back absolute and sorted.
 */
import { closeSync, lstatSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { SuperglobalError } from "../errors.ts";

/** Magic numbers of the formats sharp decodes here: JPEG, PNG, GIF, WebP, TIFF, AVIF/HEIF. */
export function looksLikeImage(head: Uint8Array): boolean {
  const at = (offset: number, ascii: string) =>
    head.length >= offset + ascii.length &&
    [...ascii].every((ch, i) => head[offset + i] === ch.charCodeAt(0));
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return true;
  if (head.length >= 8 && head[0] === 0x89 && at(1, "PNG\r\n\x1a\n")) return true;
  if (at(0, "GIF87a") || at(0, "GIF89a")) return true;
  if (at(0, "RIFF") && at(8, "WEBP")) return true;
  if (at(0, "II*\0") || at(0, "MM\0*")) return true;
  if (at(4, "ftyp") && ["avif", "avis", "heic", "heix", "mif1"].some((b) => at(8, b))) return true;
  return false;
}

/** The first bytes of a file (enough for `looksLikeImage`); empty when it cannot be read. */
function readHead(path: string): Uint8Array {
  const buffer = new Uint8Array(16);
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const n = readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, n);
  } catch {
    return new Uint8Array(0);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export interface ScanOptions {
  /** Descend into sub-folders (default true). */
  recursive?: boolean;
  /** Folders to leave out (e.g. the index's own folder), absolute. */
  exclude?: readonly string[];
}

/**
 * Image files under `roots` (folders or single files). A root that does not exist is an error
 * naming it; unreadable sub-folders are skipped and reported through `onSkip`.
 */
export function findImages(
  roots: readonly string[],
  options: ScanOptions = {},
  onSkip: (path: string, reason: string) => void = () => {},
): string[] {
  const recursive = options.recursive ?? true;
  const exclude = new Set((options.exclude ?? []).map((p) => resolve(p)));
  const found = new Set<string>();
  const visit = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (error) {
      onSkip(dir, (error as Error).message);
      return;
    }
    for (const name of names) {
      if (name.startsWith(".")) continue;
      const path = join(dir, name);
      if (exclude.has(path)) continue;
      let isDir: boolean;
      try {
        isDir = statSync(path).isDirectory();
      } catch {
        continue; // a dangling link
      }
      if (isDir) {
        // Linked folders are not followed: lstat tells them apart from real ones.
        if (recursive && !isSymlink(path)) visit(path);
      } else if (looksLikeImage(readHead(path))) {
        found.add(path);
      }
    }
  };
  for (const root of roots) {
    const path = resolve(root);
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch (cause) {
      throw new SuperglobalError("NOT_FOUND", `${root}: no such file or folder`, {
        input: root,
        cause,
      });
    }
    if (isDir) visit(path);
    else found.add(path); // named explicitly: the decoder will say if it is not an image
  }
  return [...found].sort();
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
