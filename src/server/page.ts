/**
 * The web page's files: plain HTML, CSS and JavaScript in the package's top-level `web/` folder
 * (two levels up from src/server or dist/server, as models/ is for src/descriptor), read once.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

export interface PageFile {
  name: string;
  type: string;
  body: Buffer;
}

const TYPES: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
};

/** The page's files by name (index.html, app.js, app.css). */
export function pageFiles(dir = WEB_DIR): Map<string, PageFile> {
  const files = new Map<string, PageFile>();
  for (const [name, type] of Object.entries(TYPES)) {
    files.set(name, { name, type, body: readFileSync(join(dir, name)) });
  }
  return files;
}

/** Only the page's own files, scripts and styles; images from here or the user's own blobs. */
export const PAGE_CSP =
  "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; " +
  "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
