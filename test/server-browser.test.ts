/**
 * The web page in a real browser: Debian's headless Chromium (/usr/bin/chromium, installed by
 * .ci/run) driven by playwright-core against the server on loopback. Upload a photo and see it
 * first, draw a query box, toggle reranking, click a result to search by it, page through results,
 * and fit a phone-sized screen. Screenshots go to a temp folder (printed); the desktop one is also
 * the README's docs/screenshot-web.png, written when that file is missing or when
 * SUPERGLOBAL_SCREENSHOT=update (so a test run leaves the committed picture alone otherwise).
 * Skipped with a reason where Chromium is absent.
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import sharp from "sharp";
import { Index } from "../src/app/photo-index.ts";
import { createServer, type SearchServer } from "../src/server/app.ts";
import {
  buildServerFixture,
  hasPhotos,
  photosDir,
  type ServerFixture,
} from "./helpers/server-fixture.ts";

/** The little of the DOM that the page-side predicates use (tests compile without lib "dom"). */
declare const document: {
  body: { dataset: Record<string, string | undefined> };
  getElementById(id: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): ArrayLike<{ complete: boolean; naturalWidth: number }>;
};

const CHROMIUM = "/usr/bin/chromium";
/** As the machine notes run it: no sandbox (root), no GPU, no background connections. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

const reason = !existsSync(CHROMIUM)
  ? `Chromium not found at ${CHROMIUM} (apt-get install -y chromium; .ci/run does)`
  : !hasPhotos
    ? `test photos not found at ${photosDir}`
    : undefined;
const skip = reason === undefined ? {} : { skip: reason };

let fx: ServerFixture;
let index: Index;
let server: SearchServer;
let url: string;
let browser: Browser;
let shots: string;
/** A query: a crop of dog.jpg, brighter and re-encoded, not the indexed file itself. */
let query: string;

before(async () => {
  if (reason !== undefined) return;
  fx = await buildServerFixture("superglobal-browser-");
  index = await Index.open(fx.indexDir, { readOnly: true, cacheDir: fx.cacheDir });
  server = await createServer({ index });
  url = await server.listen(0);
  query = join(fx.root, "query-dog.jpg");
  await sharp(join(photosDir, "darknet/dog.jpg"))
    .resize(512)
    .extract({ left: 20, top: 20, width: 440, height: 330 })
    .modulate({ brightness: 1.15 })
    .jpeg({ quality: 80 })
    .toFile(query);
  shots = mkdtempSync(join(tmpdir(), "superglobal-screenshots-"));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
});

after(async () => {
  if (reason !== undefined) return;
  await browser?.close();
  await server?.close();
  await index?.close();
  rmSync(fx.root, { recursive: true, force: true });
});

/** A new page that fails the test on any script error or console error (CSP violations too). */
async function open(
  width: number,
  height: number,
  path = "/",
): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width, height } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  await page.goto(`${url}${path}`);
  await page.waitForFunction(() =>
    /images/.test(document.getElementById("info")?.textContent ?? ""),
  );
  return { page, errors };
}

/** Waits for the search the page makes next, and for the page to show its results. */
async function searched(
  page: Page,
  action: () => Promise<unknown>,
  match: (u: string, body: string | null) => boolean,
) {
  const response = page.waitForResponse(
    (r) => r.url().includes("/search") && match(r.url(), r.request().postData()),
  );
  await action();
  assert.equal((await response).status(), 200);
  await page.waitForFunction(() => document.body.dataset["state"] === "done");
  return hits(page);
}

/** The result cards shown, in order: id and path (the card's tooltip). */
async function hits(page: Page): Promise<Array<{ id: number; path: string }>> {
  const cards = (await page.evaluate(
    `[...document.querySelectorAll(".hit")].map((c) => [Number(c.dataset.id), c.title.split("\\n")[0]])`,
  )) as Array<[number, string]>;
  return cards.map(([id, path]) => ({ id, path }));
}
const hitIds = async (page: Page) => (await hits(page)).map((h) => h.id);

test("upload, box, rerank toggle, click a result: the page drives the API", skip, async (t) => {
  const { page, errors } = await open(1280, 860);
  const dogId = server.service.catalog.id(fx.files.get("dog.jpg") as string);

  // Upload: the dog comes first, and its thumbnail loads.
  const first = await searched(
    page,
    () => page.setInputFiles("#file", query),
    (u) => !u.includes("box="),
  );
  assert.ok(first[0]?.path.endsWith("/dog.jpg"), JSON.stringify(first[0]));
  assert.equal((await hitIds(page))[0], dogId);
  assert.equal(await page.locator(".hit").count(), index.size);
  await page.waitForFunction(() =>
    Array.from(document.querySelectorAll(".hit img")).every(
      (i) => i.complete && i.naturalWidth > 0,
    ),
  );
  assert.match(
    (await page.textContent("#status")) ?? "",
    /results · extraction .* · search .* · rerank \(adaptive\)/,
  );

  // Draw a box on the canvas over the preview: the search is made again with `box`.
  const canvas = page.locator("#box-canvas");
  const b = await canvas.boundingBox();
  assert.ok(b !== null && b.width > 50 && b.height > 50);
  const boxed = await searched(
    page,
    async () => {
      await page.mouse.move(b.x + b.width * 0.15, b.y + b.height * 0.1);
      await page.mouse.down();
      await page.mouse.move(b.x + b.width * 0.7, b.y + b.height * 0.85, { steps: 8 });
      await page.mouse.up();
    },
    (u) => /box=\d+%2C\d+%2C\d+%2C\d+/.test(u),
  );
  assert.ok(boxed.length > 0);
  assert.match((await page.textContent("#status")) ?? "", /in the box/);
  assert.equal(await page.isEnabled("#clear-box"), true);
  const desktop = join(shots, "web-desktop.png");
  await page.screenshot({ path: desktop, fullPage: true });

  // Reranking off, then back on.
  await searched(
    page,
    () => page.uncheck("#rerank"),
    (u) => u.includes("rerank=off"),
  );
  assert.match((await page.textContent("#status")) ?? "", /no rerank/);
  assert.equal(await page.isDisabled("#mode"), true);
  await searched(
    page,
    () => page.check("#rerank"),
    (u) => u.includes("rerank=adaptive"),
  );

  // Click the second result: a search by its id, which comes back first.
  const second = (await hitIds(page))[1] as number;
  const like = await searched(
    page,
    () => page.locator(".hit").nth(1).click(),
    (_u, body) => body !== null && JSON.parse(body).id === second,
  );
  assert.equal(like[0]?.id, second);
  assert.equal((await hitIds(page))[0], second);
  assert.match(
    (await page.getAttribute("#preview", "src")) ?? "",
    new RegExp(`/images/${second}$`),
  );
  assert.match((await page.textContent("#status")) ?? "", new RegExp(`like #${second}`));

  assert.deepEqual(errors, []);
  const readme = join(repoRoot, "docs", "screenshot-web.png");
  if (!existsSync(readme) || process.env["SUPERGLOBAL_SCREENSHOT"] === "update") {
    mkdirSync(dirname(readme), { recursive: true });
    copyFileSync(desktop, readme);
    t.diagnostic(`screenshot: ${desktop} (copied to docs/screenshot-web.png)`);
  } else {
    t.diagnostic(`screenshot: ${desktop} (SUPERGLOBAL_SCREENSHOT=update copies it to docs/)`);
  }
  await page.close();
});

test("results come a page at a time; the page fits a phone-sized screen", skip, async (t) => {
  const { page, errors } = await open(390, 844, "/?per=4");
  await searched(
    page,
    () => page.setInputFiles("#file", query),
    () => true,
  );
  assert.equal(await page.locator(".hit").count(), 4);
  assert.equal(await page.textContent("#page-info"), `page 1 of ${Math.ceil(index.size / 4)}`);
  assert.equal(await page.isDisabled("#prev"), true);
  await page.click("#next");
  assert.equal(await page.textContent("#page-info"), `page 2 of ${Math.ceil(index.size / 4)}`);
  assert.equal(await page.locator(".hit .rank").first().textContent(), "#5");
  await page.click("#prev");
  assert.equal(await page.locator(".hit .rank").first().textContent(), "#1");
  // Nothing wider than the screen.
  const width = (await page.evaluate("document.documentElement.scrollWidth")) as number;
  assert.ok(width <= 390, `page is ${width} px wide`);
  const phone = join(shots, "web-phone.png");
  await page.screenshot({ path: phone, fullPage: true });
  t.diagnostic(`screenshot: ${phone}`);
  assert.deepEqual(errors, []);
  await page.close();
});
