/**
 * Google Drive links, for downloads: a share link (`/file/d/ID/view`, `open?id=ID`) becomes the
 * direct form `https://drive.google.com/uc?export=download&id=ID`, and the page Drive answers
 * instead of a large file ("Google Drive can't scan this file for viruses … Download anyway")
 * gives the URL of the file itself: its form `download-form` (action
 * `https://drive.usercontent.google.com/download` with hidden inputs id, export, confirm, uuid),
 * or, on older pages, the `uc-download-link` href carrying `confirm=TOKEN`.
 */

const DRIVE_HOSTS = new Set(["drive.google.com", "docs.google.com"]);

/** The file id of a Google Drive file link; null for other URLs (folders included). */
export function driveFileId(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (!DRIVE_HOSTS.has(u.hostname)) return null;
  const path = /^\/file\/d\/([\w-]{10,})/.exec(u.pathname);
  if (path !== null) return path[1] as string;
  const id = u.searchParams.get("id");
  if ((u.pathname === "/uc" || u.pathname === "/open") && id !== null && /^[\w-]{10,}$/.test(id)) {
    return id;
  }
  return null;
}

/** A Drive file link in its direct-download form; any other URL unchanged. */
export function driveDownloadUrl(url: string): string {
  const id = driveFileId(url);
  return id === null ? url : `https://drive.google.com/uc?export=download&id=${id}`;
}

/**
 * The URL that downloads the file from a Drive confirm page (its HTML and its own URL), or null
 * when the page has no download form or confirm link (quota exceeded, no access, not Drive).
 */
export function driveConfirmUrl(html: string, pageUrl: string): string | null {
  const form = /<form\b[^>]*\bid="download-form"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (form !== null) {
    const action = /\baction="([^"]+)"/i.exec(form[0])?.[1];
    if (action !== undefined) {
      const target = new URL(decodeEntities(action), pageUrl);
      for (const input of (form[1] as string).matchAll(/<input\b[^>]*>/gi)) {
        const tag = input[0];
        if (!/\btype="hidden"/i.test(tag)) continue;
        const name = /\bname="([^"]*)"/i.exec(tag)?.[1];
        const value = /\bvalue="([^"]*)"/i.exec(tag)?.[1] ?? "";
        if (name !== undefined) target.searchParams.set(name, decodeEntities(value));
      }
      return target.toString();
    }
  }
  for (const link of html.matchAll(/\bhref="([^"]*confirm=[^"]*)"/gi)) {
    const href = decodeEntities(link[1] as string);
    if (/[?&]confirm=[\w-]+/.test(href)) return new URL(href, pageUrl).toString();
  }
  return null;
}

function decodeEntities(s: string): string {
  return s
    .replace(/&#39;|&#x27;/g, "'")
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
}
