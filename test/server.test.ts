/**
 * The HTTP API over real HTTP on loopback (src/server/): every route, and every bad request
 * answered with a 4xx and a JSON reason while the server keeps serving. The index is a few real
 * photos (test/helpers/server-fixture.ts) with the default model.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { deflateSync } from "node:zlib";
import sharp from "sharp";
import { Index } from "../src/app/photo-index.ts";
import { createServer, type SearchServer } from "../src/server/app.ts";
import {
  buildServerFixture,
  hasPhotos,
  photosDir,
  type ServerFixture,
} from "./helpers/server-fixture.ts";

const skip = hasPhotos ? {} : { skip: `test photos not found at ${photosDir}` };

interface Answer {
  results: Array<{ id: number; path: string; score: number; rank: number }>;
  model: { name: string; network: string; dim: number; identity: string };
  timings: Record<"queue" | "decode" | "extract" | "search" | "rerank" | "total", number>;
  method: "exact" | "ann";
}

let fx: ServerFixture;
/** The writable index behind `main` (allowIndex), and a read-only one behind `tight`. */
let index: Index;
let readOnly: Index;
let main: SearchServer;
let mainUrl: string;
/** queue 1, 1 s request timeout: for the busy and slow-client cases. */
let tight: SearchServer;
let tightUrl: string;
let uploadDir: string;
/** A symbolic link that is indexed (to a photo outside the indexed folder). */
let linkPath: string;
let secretPath: string;

const bytesOf = (name: string) => readFileSync(fx.files.get(name) as string);

async function post(
  url: string,
  body: RequestInit["body"],
  type?: string,
  query = "",
): Promise<Response> {
  return fetch(`${url}/search${query}`, {
    method: "POST",
    headers: type === undefined ? {} : { "content-type": type },
    ...(body === undefined ? {} : { body }),
  });
}

async function json<T = Answer>(r: Response): Promise<T> {
  assert.match(r.headers.get("content-type") ?? "", /application\/json/);
  return (await r.json()) as T;
}

/** A refusal: the status, a JSON reason and a code. */
async function refused(
  r: Response,
  status: number,
  reason?: RegExp,
): Promise<{ error: string; code: string }> {
  const body = await json<{ error: string; code: string }>(r);
  assert.equal(r.status, status, JSON.stringify(body));
  assert.equal(typeof body.error, "string");
  assert.equal(typeof body.code, "string");
  if (reason !== undefined) assert.match(body.error, reason);
  return body;
}

/** A GET with the path exactly as written (fetch would normalise `..`). */
function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method: "GET" }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * A PNG claiming `width` x `height` pixels (valid CRCs), with only the start of its pixel data: the
 * head of a decompression bomb (`data: false` leaves the IDAT chunk out).
 */
function pngHeader(width: number, height: number, data = true): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = (crcTable[(c ^ x) & 0xff] as number) ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    ...(data ? [chunk("IDAT", deflateSync(Buffer.alloc(64 * 1024)))] : []),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

before(async () => {
  if (!hasPhotos) return;
  fx = await buildServerFixture();
  // An indexed symbolic link to a photo outside the indexed folder, and a file never indexed.
  const outside = join(fx.root, "outside.jpg");
  await sharp(join(photosDir, "darknet/giraffe.jpg")).resize(200).jpeg().toFile(outside);
  secretPath = join(fx.root, "secret.jpg");
  await sharp(join(photosDir, "darknet/person.jpg")).resize(200).jpeg().toFile(secretPath);
  linkPath = join(fx.photos, "linked.jpg");
  symlinkSync(outside, linkPath);
  index = await Index.open(fx.indexDir, { cacheDir: fx.cacheDir });
  await index.add([linkPath]);
  readOnly = await Index.open(fx.indexDir, { readOnly: true, cacheDir: fx.cacheDir });
  uploadDir = join(fx.root, "uploads");
  main = await createServer({ index, allowIndex: true, uploadDir, maxUploadMb: 1 });
  mainUrl = await main.listen(0);
  tight = await createServer({ index: readOnly, queue: 1, requestTimeoutS: 1 });
  tightUrl = await tight.listen(0);
});

after(async () => {
  if (!hasPhotos) return;
  await main?.close();
  await tight?.close();
  await index?.close();
  await readOnly?.close();
  rmSync(fx.root, { recursive: true, force: true });
});

describe("POST /search", skip, () => {
  test("a raw image body finds that photo first, with the model and timings per stage", async () => {
    const r = await post(mainUrl, bytesOf("dog.jpg"), "image/jpeg", "?top=3");
    assert.equal(r.status, 200);
    const a = await json(r);
    assert.equal(a.results.length, 3);
    assert.ok(a.results[0]?.path.endsWith("/dog.jpg"), JSON.stringify(a.results[0]));
    assert.deepEqual(
      a.results.map((h) => h.rank),
      [1, 2, 3],
    );
    for (const h of a.results) {
      assert.ok(Number.isInteger(h.id) && h.id >= 0);
      assert.equal(typeof h.score, "number");
    }
    assert.equal(a.model.name, "default");
    assert.equal(a.model.dim, index.extractor.dim);
    assert.equal(a.model.identity, index.extractor.identity);
    for (const stage of ["queue", "decode", "extract", "search", "rerank", "total"] as const) {
      assert.ok(a.timings[stage] >= 0, stage);
    }
    assert.ok(a.timings.extract > 0 && a.timings.decode > 0 && a.timings.search > 0);
    assert.ok(a.timings.total >= a.timings.extract + a.timings.search);
    assert.equal(a.method, "exact", "a small index is searched exactly");
  });

  test("a multipart field `image` with top, rerank and box as fields", async () => {
    const form = new FormData();
    form.set("image", new Blob([bytesOf("eagle.jpg")], { type: "image/jpeg" }), "eagle.jpg");
    form.set("top", "2");
    form.set("rerank", "off");
    const r = await post(mainUrl, form);
    const a = await json(r);
    assert.equal(r.status, 200, JSON.stringify(a));
    assert.equal(a.results.length, 2);
    assert.ok(a.results[0]?.path.endsWith("/eagle.jpg"));
    assert.equal(a.timings.rerank, 0);

    const boxed = new FormData();
    boxed.set("image", new Blob([bytesOf("eagle.jpg")], { type: "image/jpeg" }), "eagle.jpg");
    boxed.set("box", "10,10,120,120");
    boxed.set("rerank", "off");
    const b = await json(await post(mainUrl, boxed));
    assert.ok(b.results.length > 0);
    // The crop is another query: its best score is no longer the photo's own 1.0.
    assert.ok((b.results[0]?.score ?? 1) < 0.999);
  });

  test("each rerank mode answers; a box in the query string crops the query", async () => {
    for (const mode of ["adaptive", "paper", "off"]) {
      const r = await post(mainUrl, bytesOf("horses.jpg"), "image/jpeg", `?rerank=${mode}&top=5`);
      const a = await json(r);
      assert.equal(r.status, 200, `${mode}: ${JSON.stringify(a)}`);
      assert.ok(a.results[0]?.path.endsWith("/horses.jpg"), mode);
    }
    const full = await json(await post(mainUrl, bytesOf("Kite.jpg"), "image/jpeg", "?rerank=off"));
    const crop = await json(
      await post(mainUrl, bytesOf("Kite.jpg"), "image/jpeg", "?rerank=off&box=0,0,128,100"),
    );
    assert.notEqual(crop.results[0]?.score, full.results[0]?.score);
  });

  test("by id (JSON body or ?id=): more like an indexed image, itself first; ids are stable", async () => {
    const first = await json(await post(mainUrl, bytesOf("Aqua.jpg"), "image/jpeg"));
    const id = first.results[0]?.id as number;
    assert.ok(first.results[0]?.path.endsWith("/Aqua.jpg"));
    const byBody = await post(mainUrl, JSON.stringify({ id, top: 4 }), "application/json");
    const a = await json(byBody);
    assert.equal(byBody.status, 200, JSON.stringify(a));
    assert.equal(a.results[0]?.id, id);
    assert.equal(a.results.length, 4);
    assert.equal(a.timings.extract, 0);
    const byQuery = await json(
      await post(mainUrl, undefined, undefined, `?id=${id}&top=4&rerank=off`),
    );
    assert.equal(byQuery.results[0]?.id, id);
    // Without reranking the score is the dot product of a unit descriptor with itself.
    assert.ok(Math.abs((byQuery.results[0]?.score ?? 0) - 1) < 1e-3);
    // The same image has the same id in every answer.
    for (const h of a.results) {
      const again = await json(
        await post(mainUrl, JSON.stringify({ id: h.id, top: 1 }), "application/json"),
      );
      assert.equal(again.results[0]?.path, h.path);
    }
  });
});

describe("GET /images", skip, () => {
  test("/images/:id serves the original file with its type; /thumb a JPEG of at most 256 px", async () => {
    const a = await json(await post(mainUrl, bytesOf("LadyBird.jpg"), "image/jpeg"));
    const id = a.results[0]?.id as number;
    const r = await fetch(`${mainUrl}/images/${id}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "image/jpeg");
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytesOf("LadyBird.jpg"));

    const t = await fetch(`${mainUrl}/images/${id}/thumb`);
    assert.equal(t.status, 200);
    assert.equal(t.headers.get("content-type"), "image/jpeg");
    const meta = await sharp(Buffer.from(await t.arrayBuffer())).metadata();
    assert.equal(meta.format, "jpeg");
    assert.ok(Math.max(meta.width, meta.height) <= 256);
    const again = await fetch(`${mainUrl}/images/${id}/thumb`); // from the cache
    assert.equal(again.status, 200);
  });

  test("an indexed symbolic link is served, and refused once re-pointed elsewhere", async () => {
    const id = main.service.catalog.id(linkPath) as number;
    assert.ok(Number.isInteger(id));
    assert.equal((await fetch(`${mainUrl}/images/${id}`)).status, 200);
    unlinkSync(linkPath);
    symlinkSync(secretPath, linkPath);
    await refused(await fetch(`${mainUrl}/images/${id}`), 404, /no indexed image/);
    await refused(await fetch(`${mainUrl}/images/${id}/thumb`), 404);
    // An indexed file swapped for a link to a file outside the index is refused too.
    const boxId = main.service.catalog.id(fx.files.get("box.jpg") as string) as number;
    const boxBytes = bytesOf("box.jpg");
    unlinkSync(fx.files.get("box.jpg") as string);
    symlinkSync("/etc/passwd", fx.files.get("box.jpg") as string);
    try {
      await refused(await fetch(`${mainUrl}/images/${boxId}`), 404);
    } finally {
      unlinkSync(fx.files.get("box.jpg") as string);
      writeFileSync(fx.files.get("box.jpg") as string, boxBytes);
    }
  });
});

describe("service routes", skip, () => {
  test("GET /health, /metrics (Prometheus text) and /openapi.json", async () => {
    const h = await json<{ status: string; images: number; queue: { capacity: number } }>(
      await fetch(`${mainUrl}/health`),
    );
    assert.equal(h.status, "ok");
    assert.equal(h.images, index.size);
    assert.equal(h.queue.capacity, 8);

    const m = await fetch(`${mainUrl}/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await m.text();
    assert.match(text, /^# TYPE superglobal_http_requests_total counter$/m);
    assert.match(
      text,
      /^superglobal_http_requests_total\{method="POST",route="\/search",status="200"\} \d+$/m,
    );
    assert.match(
      text,
      /^superglobal_search_stage_seconds_bucket\{stage="extract",le="0\.1"\} \d+$/m,
    );
    assert.match(text, /^superglobal_search_stage_seconds_count\{stage="search"\} [1-9]\d*$/m);
    assert.match(text, new RegExp(`^superglobal_index_images ${index.size}$`, "m"));
    assert.match(text, /^superglobal_queue_depth 0$/m);
    assert.match(text, /^process_resident_memory_bytes \d+$/m);
    // Every sample line is `name{labels} value` or `name value`.
    for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
      assert.match(line, /^[a-z_]+(\{[^}]*\})? [-+.\deE]+$/, line);
    }

    const o = await json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>(
      await fetch(`${mainUrl}/openapi.json`),
    );
    assert.match(o.openapi, /^3\./);
    for (const path of [
      "/search",
      "/images/{id}",
      "/images/{id}/thumb",
      "/index",
      "/health",
      "/metrics",
    ]) {
      assert.ok(o.paths[path], path);
    }
    const search = o.paths["/search"]?.["post"] as {
      requestBody: { content: Record<string, unknown> };
    };
    assert.ok(search.requestBody.content["image/*"]);
    assert.ok(search.requestBody.content["multipart/form-data"]);
    assert.ok(search.requestBody.content["application/json"]);
  });

  test("GET / serves the page, its script and its style, with a restrictive CSP", async () => {
    const page = await fetch(`${mainUrl}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    const html = await page.text();
    assert.match(html, /<script type="module" src="\/app.js">/);
    assert.doesNotMatch(html, /https?:\/\//); // nothing from the network
    const js = await fetch(`${mainUrl}/app.js`);
    assert.match(js.headers.get("content-type") ?? "", /^text\/javascript/);
    assert.match(await js.text(), /\/search/);
    const css = await fetch(`${mainUrl}/app.css`);
    assert.match(css.headers.get("content-type") ?? "", /^text\/css/);
  });
});

describe("bad requests: a 4xx with a JSON reason, and the server keeps serving", skip, () => {
  test("truncated image", async () => {
    const dog = bytesOf("dog.jpg");
    await refused(
      await post(mainUrl, dog.subarray(0, dog.length >> 1), "image/jpeg"),
      400,
      /decode|truncat/i,
    );
  });

  test("not an image (text, random bytes, a JPEG marker followed by junk)", async () => {
    await refused(await post(mainUrl, "hello, world", "image/jpeg"), 415, /not an image/);
    await refused(await post(mainUrl, Buffer.alloc(4096, 7), "image/png"), 415);
    const junk = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(2000, 0x41)]);
    await refused(await post(mainUrl, junk, "image/jpeg"), 400);
  });

  test("huge dimensions: a PNG header claiming 50000x50000 is refused before decoding", async () => {
    const png = pngHeader(50_000, 50_000);
    const body = await refused(await post(mainUrl, png, "image/png"), 413, /50000x50000/);
    assert.equal(body.code, "TOO_MANY_PIXELS");
    await refused(await post(mainUrl, pngHeader(50_000, 50_000, false), "image/png"), 400);
    await refused(await post(mainUrl, pngHeader(600, 400), "image/png"), 400); // data cut short
  });

  test("empty body, in every form", async () => {
    await refused(await post(mainUrl, "", "image/jpeg"), 400, /empty/);
    await refused(await post(mainUrl, undefined), 400, /send an image/);
    await refused(await post(mainUrl, "", "application/json"), 400);
    await refused(await post(mainUrl, new FormData()), 400);
    const form = new FormData();
    form.set("top", "3");
    await refused(await post(mainUrl, form), 400, /no field `image`/);
  });

  test("bad box", async () => {
    const dog = bytesOf("dog.jpg");
    for (const box of [
      "1,2,3",
      "a,b,c,d",
      "10,10,5,5",
      "-1,0,5,5",
      "0,0,10,",
      "1,2,3,4,5",
      "NaN,0,1,1",
    ]) {
      await refused(
        await post(mainUrl, dog, "image/jpeg", `?box=${encodeURIComponent(box)}`),
        400,
        /box/,
      );
    }
    // Well-formed, but outside the 256 px image: the crop would be empty.
    await refused(await post(mainUrl, dog, "image/jpeg", "?box=1000,1000,2000,2000"), 400, /box/);
    await refused(
      await post(mainUrl, JSON.stringify({ id: 0, box: "0,0,5,5" }), "application/json"),
      400,
      /box/,
    );
  });

  test("bad top, rerank and fields", async () => {
    const dog = bytesOf("dog.jpg");
    await refused(await post(mainUrl, dog, "image/jpeg", "?top=0"), 400);
    await refused(await post(mainUrl, dog, "image/jpeg", "?top=abc"), 400);
    await refused(await post(mainUrl, dog, "image/jpeg", "?top=100000"), 400);
    await refused(await post(mainUrl, dog, "image/jpeg", "?rerank=fast"), 400);
    await refused(await post(mainUrl, "[1,2]", "application/json"), 400);
    await refused(await post(mainUrl, "{bad json", "application/json"), 400);
    await refused(
      await post(mainUrl, JSON.stringify({ id: 0, path: "/etc/passwd" }), "application/json"),
      400,
      /unknown parameter "path"/,
    );
    const form = new FormData();
    form.set("photo", new Blob([dog], { type: "image/jpeg" }), "dog.jpg");
    await refused(await post(mainUrl, form), 400, /field `image`/);
  });

  test("unknown id", async () => {
    await refused(
      await post(mainUrl, JSON.stringify({ id: 999_999 }), "application/json"),
      404,
      /999999/,
    );
    await refused(await post(mainUrl, undefined, undefined, "?id=-1"), 400);
    await refused(await fetch(`${mainUrl}/images/999999`), 404);
    await refused(await fetch(`${mainUrl}/images/999999/thumb`), 404);
    await refused(await fetch(`${mainUrl}/images/abc`), 400);
    await refused(await fetch(`${mainUrl}/images/1.5`), 400);
  });

  test("`..` and other paths never reach a file", async () => {
    for (const path of [
      "/images/../../../../etc/passwd",
      "/images/..%2F..%2F..%2Fetc%2Fpasswd",
      "/images/%2e%2e/%2e%2e/etc/passwd",
      "/images/0/../../../etc/passwd",
      "/images/%2Fetc%2Fpasswd/thumb",
      "/..%2F..%2Fetc%2Fpasswd",
      "/web/../package.json",
    ]) {
      const r = await rawGet(mainUrl, path);
      assert.ok(r.status >= 400 && r.status < 500, `${path}: ${r.status}`);
      assert.doesNotMatch(r.body, /root:/, path);
      assert.doesNotThrow(() => JSON.parse(r.body), path);
    }
  });

  test("wrong content type", async () => {
    for (const type of [
      "text/plain",
      "application/xml",
      "application/x-www-form-urlencoded",
      "video/mp4",
    ]) {
      await refused(await post(mainUrl, "data", type), 415, /Content-Type/);
    }
  });

  test("too large upload (raw and multipart; the server's limit is 1 MiB)", async () => {
    const big = Buffer.alloc(1.5 * 2 ** 20, 1);
    big.set([0xff, 0xd8, 0xff, 0xe0]);
    await refused(await post(mainUrl, big, "image/jpeg"), 413);
    const form = new FormData();
    form.set("image", new Blob([big], { type: "image/jpeg" }), "big.jpg");
    await refused(await post(mainUrl, form), 413);
  });

  test("malformed multipart: no boundary, cut short, two images", async () => {
    await refused(await post(mainUrl, "garbage", "multipart/form-data"), 400, /multipart/);
    const cut =
      '--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc';
    await refused(await post(mainUrl, cut, "multipart/form-data; boundary=xyz"), 400, /multipart/);
    const two = new FormData();
    two.append("image", new Blob([bytesOf("dog.jpg")], { type: "image/jpeg" }), "a.jpg");
    two.append("image", new Blob([bytesOf("dog.jpg")], { type: "image/jpeg" }), "b.jpg");
    const r = await post(mainUrl, two);
    assert.ok(r.status === 400 || r.status === 413, String(r.status));
    await refused(r, r.status);
  });

  test("unknown routes and methods", async () => {
    await refused(await fetch(`${mainUrl}/nope`), 404);
    await refused(await fetch(`${mainUrl}/search`), 404);
    await refused(await fetch(`${mainUrl}/images/0`, { method: "DELETE" }), 404);
  });

  test("after all of that the server still answers", async () => {
    const a = await json(await post(mainUrl, bytesOf("graf1.jpg"), "image/jpeg"));
    assert.ok(a.results[0]?.path.endsWith("/graf1.jpg"));
    assert.equal((await fetch(`${mainUrl}/health`)).status, 200);
  });
});

describe("limits", skip, () => {
  test("queue full: concurrent uploads beyond the bound (1) get 503 with Retry-After", async () => {
    const dog = bytesOf("dog.jpg");
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => post(tightUrl, dog, "image/jpeg")),
    );
    const statuses = answers.map((r) => r.status);
    assert.ok(statuses.includes(200), statuses.join());
    assert.ok(statuses.includes(503), statuses.join());
    assert.ok(
      statuses.every((s) => s === 200 || s === 503),
      statuses.join(),
    );
    for (const r of answers) {
      if (r.status === 503) {
        assert.match(r.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
        const body = await refused(r, 503, /busy/);
        assert.equal(body.code, "QUEUE_FULL");
      } else {
        await r.arrayBuffer();
      }
    }
    // Searches by id need no extraction and are not queued.
    const byId = await post(tightUrl, JSON.stringify({ id: 0 }), "application/json");
    assert.equal(byId.status, 200);
    const text = await (await fetch(`${tightUrl}/metrics`)).text();
    assert.match(text, /^superglobal_queue_rejected_total [1-9]\d*$/m);
    // And once the line is gone, uploads are admitted again.
    assert.equal((await post(tightUrl, dog, "image/jpeg")).status, 200);
  });

  test("a client that stalls mid-request is cut off (request timeout)", async () => {
    const { hostname, port } = new URL(tightUrl);
    const closed = await new Promise<{ ms: number; data: string }>((resolve, reject) => {
      const t0 = performance.now();
      let data = "";
      const socket = connect(Number(port), hostname, () => {
        socket.write(
          "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n\xff\xd8",
        );
      });
      socket.setEncoding("utf8");
      socket.on("data", (c: string) => {
        data += c;
      });
      socket.on("close", () => resolve({ ms: performance.now() - t0, data }));
      socket.on("error", reject);
      setTimeout(() => reject(new Error("still open after 15 s")), 15_000).unref();
    });
    assert.ok(closed.ms < 15_000);
    assert.equal((await fetch(`${tightUrl}/health`)).status, 200);
  });
});

describe("POST /index", skip, () => {
  test("adds uploads while searches go on; they are found by image and by id", async () => {
    const giraffe = await sharp(join(photosDir, "darknet/giraffe.jpg"))
      .resize(240)
      .jpeg()
      .toBuffer();
    const person = await sharp(join(photosDir, "darknet/person.jpg")).resize(240).jpeg().toBuffer();
    const before = index.size;
    // Searches by id of an existing image, all the while.
    let searching = true;
    let searched = 0;
    const searches: Promise<void>[] = [];
    const loop = (async () => {
      while (searching) {
        searched += 1;
        const r = await post(mainUrl, JSON.stringify({ id: 0, top: 50 }), "application/json");
        const a = await json(r);
        assert.equal(r.status, 200);
        assert.equal(a.results[0]?.id, 0);
        assert.equal(new Set(a.results.map((h) => h.id)).size, a.results.length);
      }
    })();
    searches.push(loop);
    const form = new FormData();
    form.append("image", new Blob([giraffe], { type: "image/jpeg" }), "../../giraffe.jpg");
    form.append("image", new Blob([person], { type: "image/jpeg" }), "person.jpg");
    const r = await fetch(`${mainUrl}/index`, { method: "POST", body: form });
    const added = await json<{
      files: Array<{ name: string; status: string; id: number }>;
      images: number;
    }>(r);
    searching = false;
    await Promise.all(searches);
    assert.ok(searched > 1, `${searched} searches during the add`);
    assert.equal(r.status, 200, JSON.stringify(added));
    assert.deepEqual(
      added.files.map((f) => f.status),
      ["added", "added"],
    );
    assert.equal(added.images, before + 2);
    // Saved under names of the server's own, in the upload folder only.
    const saved = readdirSync(uploadDir);
    assert.equal(saved.length, 2);
    assert.ok(
      saved.every((n) => /^\d+-[0-9a-f-]+\.jpg$/.test(n)),
      saved.join(),
    );

    const found = await json(await post(mainUrl, giraffe, "image/jpeg", "?top=1"));
    assert.equal(found.results[0]?.id, added.files[0]?.id);
    const like = await json(
      await post(mainUrl, JSON.stringify({ id: added.files[1]?.id, top: 1 }), "application/json"),
    );
    assert.equal(like.results[0]?.id, added.files[1]?.id);
    const image = await fetch(`${mainUrl}/images/${added.files[1]?.id}`);
    assert.deepEqual(Buffer.from(await image.arrayBuffer()), person);

    // A raw body works too; bad uploads are refused like searches.
    const one = await fetch(`${mainUrl}/index`, {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: await sharp(giraffe).flop().jpeg().toBuffer(),
    });
    assert.equal(one.status, 200);
    await refused(
      await fetch(`${mainUrl}/index`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: pngHeader(50_000, 50_000),
      }),
      413,
    );
    await refused(
      await fetch(`${mainUrl}/index`, {
        method: "POST",
        headers: { "content-type": "image/jpeg" },
        body: "text",
      }),
      415,
    );
    await refused(await fetch(`${mainUrl}/index`, { method: "POST" }), 400);
  });

  test("is refused (403) where indexing is off", async () => {
    const r = await fetch(`${tightUrl}/index`, {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: bytesOf("dog.jpg"),
    });
    await refused(r, 403, /--allow-index/);
  });
});

describe("superglobal serve", skip, () => {
  test("listens on 127.0.0.1 and stops gracefully on SIGTERM with a search in flight", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "serve", "--index", fx.indexDir, "--port", "0"],
      {
        env: { ...process.env, SUPERGLOBAL_CACHE: fx.cacheDir },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<number | null>((resolve) =>
      child.on("exit", (code) => resolve(code)),
    );
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
        const m = /serving \d+ images of .* at (http:\/\/[^\s]+)\//.exec(out);
        if (m) resolve(m[1] as string);
      });
      void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const inFlight = post(url, bytesOf("dog.jpg"), "image/jpeg");
    await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGTERM");
    const r = await inFlight;
    assert.equal(r.status, 200);
    assert.ok((await json(r)).results[0]?.path.endsWith("/dog.jpg"));
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /SIGTERM: finishing requests in flight/);
    assert.match(stderr, /stopped/);
    await assert.rejects(fetch(`${url}/health`));
  });
});
