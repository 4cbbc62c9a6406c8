/**
 * The models a user can name and pulling them: the registry and `superglobal models [--json]`;
 * `download` against a local HTTP server (sha256 check, resume with Range, a server that ignores
 * Range, redirects, a Google Drive confirm page, HTTP and network errors named by URL);
 * `models pull` into the cache and `Extractor.create({ model: NAME })` finding the pulled file; and
 * foreign ONNX feature networks (the ONNX model zoo's int8 MobileNetV2) with the SuperGlobal head,
 * checked against GeM computed here in float64 from the asset's features variant. Nothing here
 * reaches the internet: every URL is on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Extractor } from "../src/descriptor/extractor.ts";
import {
  modelStatuses,
  modelsDir,
  pullModel,
  readManifest,
  resolvePulled,
} from "../src/descriptor/pull.ts";
import { MODELS } from "../src/descriptor/registry.ts";
import { SuperglobalError } from "../src/errors.ts";
import { decodeImage } from "../src/image/decode.ts";
import { toImagenetRgbTensor } from "../src/image/normalize.ts";
import { download } from "../src/io/download.ts";
import { driveConfirmUrl, driveDownloadUrl, driveFileId } from "../src/io/google-drive.ts";
import { OnnxGraph } from "../src/runtime/onnx-graph.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { assetsDir, fixture, hasShared, missingReason } from "./helpers/shared.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tmp = mkdtempSync(join(tmpdir(), "superglobal-models-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const zooDir = join(assetsDir, "mobilenetv2-12-int8-onnx");
const zooModel = join(zooDir, "mobilenetv2-12-int8.onnx");
const zooFeatures = join(zooDir, "mobilenetv2-12-int8-features.onnx");
const hasZoo = existsSync(zooModel) && existsSync(zooFeatures);
const zooOnly = hasZoo ? {} : { skip: `ONNX model zoo asset not found at ${zooDir}` };
const sharedOnly = hasShared ? {} : { skip: missingReason };
const photos = ["darknet/dog.jpg", "darknet/eagle.jpg", "lomiri/Dragonfly_by_Bolly.jpg"].map((p) =>
  join(assetsDir, "debian-photos", p),
);

let counter = 0;
function fresh(name: string): string {
  counter += 1;
  const dir = join(tmp, `${counter}-${name}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

async function rejects(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SuperglobalError, `not a SuperglobalError: ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// A local HTTP server whose routes each test sets.

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const routes = new Map<string, Handler>();
const requests: { path: string; range: string | undefined }[] = [];
const server = createServer((req, res) => {
  const path = (req.url ?? "/").split("?")[0] as string;
  requests.push({ path: req.url ?? "/", range: req.headers.range });
  const handler = routes.get(path);
  if (handler === undefined) {
    res.writeHead(404, "Not Found").end("no such file");
    return;
  }
  handler(req, res);
});
let base = "";
before(async () => {
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Serves `body`, honouring Range unless told not to; `breakAt` closes the socket mid-body once. */
function serve(
  body: Uint8Array,
  options: { ignoreRange?: boolean; breakAt?: number; type?: string } = {},
): Handler {
  let broken = false;
  return (req, res) => {
    const type = options.type ?? "application/octet-stream";
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    if (range !== null && options.ignoreRange !== true) {
      start = Number(range[1]);
      res.writeHead(206, {
        "content-type": type,
        "content-length": body.length - start,
        "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { "content-type": type, "content-length": body.length });
    }
    if (options.breakAt !== undefined && !broken && start < options.breakAt) {
      broken = true;
      // Close the socket in the middle of the body, once the client has had time to read what
      // was sent (a stream that errors drops the chunks it has not handed out yet).
      res.write(body.subarray(start, options.breakAt), () => {
        setTimeout(() => req.socket.destroy(), 150);
      });
      return;
    }
    res.end(body.subarray(start));
  };
}

const payload = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7919 + (i >> 8)) & 255);

// ---------------------------------------------------------------------------------------------

describe("the registry", () => {
  test("lists default, cvnet-r50, cvnet-r101 and mobilenetv2-imagenet with dims and conventions", () => {
    const dir = fresh("list");
    const list = modelStatuses(dir);
    assert.deepEqual(
      list.map((m) => [m.name, m.dim, m.input, m.delivery, m.available]),
      [
        ["default", 1792, "rgb-unit", "package", true],
        ["cvnet-r50", 2048, "bgr-imagenet", "pull", false],
        ["cvnet-r101", 2048, "bgr-imagenet", "pull", false],
        ["mobilenetv2-imagenet", 1280, "rgb-imagenet", "pull", false],
      ],
    );
    const zoo = list[3];
    assert.equal(zoo?.sha256, "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f");
    assert.equal(zoo?.bytes, 3_655_033);
    assert.ok(zoo?.urls.some((u) => u.startsWith("https://github.com/onnx/models/raw/main/")));
    assert.equal(list[1]?.sha256, null, "CVNet publishes no checksum");
    assert.match(list[1]?.urls[0] ?? "", /^https:\/\/drive\.google\.com\/uc\?export=download&id=/);
    assert.equal(list[1]?.get, "superglobal models pull cvnet-r50");
    assert.match(list[2]?.get ?? "", /--url/);
    for (const m of list) assert.ok(m.licence !== null && m.description.length > 0, m.name);
    assert.equal(modelsDir("/c"), join("/c", "models"));
  });

  test("`models --json` and `models` through the CLI", () => {
    const cache = fresh("cli-cache");
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", "models", ...args], {
        cwd: repoRoot,
        encoding: "utf8",
        env: { ...process.env, SUPERGLOBAL_CACHE: cache },
      });
    const json = run("--json");
    assert.equal(json.status, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as {
      modelsDir: string;
      models: {
        name: string;
        dim: number;
        input: string;
        available: boolean;
        path: string | null;
        get: string;
      }[];
    };
    assert.equal(parsed.modelsDir, join(cache, "models"));
    assert.deepEqual(
      parsed.models.map((m) => m.name),
      ["default", "cvnet-r50", "cvnet-r101", "mobilenetv2-imagenet"],
    );
    for (const m of parsed.models) {
      assert.deepEqual(Object.keys(m).sort(), [
        "available",
        "bytes",
        "delivery",
        "description",
        "dim",
        "file",
        "get",
        "input",
        "licence",
        "name",
        "network",
        "page",
        "path",
        "provenance",
        "sha256",
        "sha256Published",
        "urls",
      ]);
    }
    // A pulled file shows as available, with its path.
    mkdirSync(join(cache, "models"));
    writeFileSync(join(cache, "models", "CVPR2022_CVNet_R50.pyth"), "x");
    const again = JSON.parse(run("--json").stdout) as typeof parsed;
    const r50 = again.models.find((m) => m.name === "cvnet-r50");
    assert.equal(r50?.available, true);
    assert.equal(r50?.path, join(cache, "models", "CVPR2022_CVNet_R50.pyth"));
    const text = run();
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /cvnet-r50 +2048-d +bgr-imagenet +pulled: /);
    assert.match(text.stdout, /mobilenetv2-imagenet +1280-d +rgb-imagenet +not pulled/);
    assert.match(text.stdout, /get: superglobal models pull mobilenetv2-imagenet/);
  });

  test("a pulled model's name resolves to its cached file; a missing one names the pull command", async () => {
    const cache = fresh("resolve");
    await rejects(
      Extractor.create({ model: "cvnet-r50", cacheDir: cache }),
      "NOT_FOUND",
      /model cvnet-r50 is not pulled .*run `superglobal models pull cvnet-r50`/,
    );
    await rejects(
      Extractor.create({ model: "mobilenetv2-imagenet", cacheDir: cache }),
      "NOT_FOUND",
      /`superglobal models pull mobilenetv2-imagenet`/,
    );
    mkdirSync(join(cache, "models"));
    writeFileSync(join(cache, "models", "CVPR2022_CVNet_R101.pyth"), "x");
    writeFileSync(join(cache, "models", "mobilenetv2-12-int8.onnx"), "x");
    assert.deepEqual(resolvePulled({ model: "cvnet-r101", cacheDir: cache, threads: 1 }), {
      cacheDir: cache,
      threads: 1,
      scales: 3,
      rgem: true,
      gemp: true,
      checkpoint: join(cache, "models", "CVPR2022_CVNet_R101.pyth"),
      depth: 101,
    });
    assert.deepEqual(resolvePulled({ model: "mobilenetv2-imagenet", cacheDir: cache, scales: 1 }), {
      cacheDir: cache,
      scales: 1,
      rgem: true,
      gemp: true,
      model: join(cache, "models", "mobilenetv2-12-int8.onnx"),
      feature: { output: "627_quantized", input: "rgb-imagenet" },
    });
    const plain = { model: "some.onnx" };
    assert.equal(resolvePulled(plain), plain);
  });
});

describe("download", () => {
  test("a full download with the right sha256, through a redirect", async () => {
    routes.set("/full.bin", serve(payload));
    routes.set("/moved", (_req, res) => res.writeHead(302, { location: "/full.bin" }).end());
    const dest = join(fresh("full"), "sub", "full.bin");
    const seen: number[] = [];
    const result = await download(`${base}/moved`, dest, {
      sha256: sha256(payload),
      onProgress: (p) => seen.push(p.received),
    });
    assert.deepEqual(readFileSync(dest), Buffer.from(payload));
    assert.equal(result.sha256, sha256(payload));
    assert.equal(result.bytes, payload.length);
    assert.equal(result.url, `${base}/full.bin`);
    assert.equal(result.resumed, false);
    assert.equal(existsSync(`${dest}.part`), false);
    assert.equal(seen.at(-1), payload.length);
  });

  test("a sha256 mismatch is refused and the part deleted", async () => {
    routes.set("/wrong.bin", serve(payload));
    const dest = join(fresh("mismatch"), "wrong.bin");
    await rejects(
      download(`${base}/wrong.bin`, dest, { sha256: "0".repeat(64) }),
      "BAD_FILE",
      new RegExp(`^${base}/wrong\\.bin: sha256 mismatch: expected 0{64}, got ${sha256(payload)}`),
    );
    assert.equal(existsSync(dest), false);
    assert.equal(existsSync(`${dest}.part`), false);
  });

  test("an interrupted download is kept and resumed with a Range request", async () => {
    routes.set("/broken.bin", serve(payload, { breakAt: 120_000 }));
    const dest = join(fresh("resume"), "broken.bin");
    requests.length = 0;
    await rejects(
      download(`${base}/broken.bin`, dest, { retries: 0 }),
      "IO_ERROR",
      /\/broken\.bin: the connection broke after 120000 of 300000 bytes; 120000 bytes are kept in .*broken\.bin\.part: run the same command again to resume/,
    );
    assert.equal(readFileSync(`${dest}.part`).length, 120_000);
    const result = await download(`${base}/broken.bin`, dest, { sha256: sha256(payload) });
    assert.equal(result.resumed, true);
    assert.deepEqual(readFileSync(dest), Buffer.from(payload));
    assert.deepEqual(
      requests.map((r) => r.range),
      [undefined, "bytes=120000-"],
    );
  });

  test("a broken connection is resumed within one call", async () => {
    routes.set("/flaky.bin", serve(payload, { breakAt: 50_000 }));
    const dest = join(fresh("flaky"), "flaky.bin");
    requests.length = 0;
    const result = await download(`${base}/flaky.bin`, dest, { sha256: sha256(payload) });
    assert.deepEqual(readFileSync(dest), Buffer.from(payload));
    assert.equal(result.resumed, true);
    assert.deepEqual(
      requests.map((r) => r.range),
      [undefined, "bytes=50000-"],
    );
  });

  test("a server that ignores Range sends the whole file, and the part restarts cleanly", async () => {
    routes.set("/norange.bin", serve(payload, { ignoreRange: true }));
    const dest = join(fresh("norange"), "norange.bin");
    writeFileSync(`${dest}.part`, new Uint8Array(77_777).fill(9)); // stale, wrong bytes
    requests.length = 0;
    const result = await download(`${base}/norange.bin`, dest, { sha256: sha256(payload) });
    assert.deepEqual(
      requests.map((r) => r.range),
      ["bytes=77777-"],
    );
    assert.equal(result.resumed, false);
    assert.deepEqual(readFileSync(dest), Buffer.from(payload));
  });

  test("HTTP errors and network failures name the URL", async () => {
    const dest = join(fresh("errors"), "f.bin");
    await rejects(
      download(`${base}/missing.bin`, dest),
      "NOT_FOUND",
      new RegExp(`^${base}/missing\\.bin: HTTP 404 Not Found$`),
    );
    routes.set("/forbidden.bin", (_req, res) => res.writeHead(403, "Forbidden").end());
    await rejects(
      download(`${base}/forbidden.bin`, dest),
      "IO_ERROR",
      /forbidden\.bin: HTTP 403 Forbidden$/,
    );
    routes.set("/down.bin", (_req, res) => res.writeHead(503, "Service Unavailable").end());
    await rejects(
      download(`${base}/down.bin`, dest, { retries: 1 }),
      "IO_ERROR",
      /down\.bin: HTTP 503 Service Unavailable$/,
    );
    // A port nothing listens on.
    const closed = createServer();
    await new Promise<void>((done) => closed.listen(0, "127.0.0.1", done));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((done) => closed.close(done));
    await rejects(
      download(`http://127.0.0.1:${port}/x.bin`, dest, { retries: 0 }),
      "IO_ERROR",
      new RegExp(`^http://127\\.0\\.0\\.1:${port}/x\\.bin: cannot connect \\(ECONNREFUSED`),
    );
    assert.equal(existsSync(dest), false);
  });

  test("a Google Drive style confirm page is followed to the file; another web page is refused", async () => {
    const page = (id: string) =>
      `<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>` +
      `<p>Google Drive can't scan this file for viruses.</p>` +
      `<form id="download-form" action="${base}/usercontent/download" method="get">` +
      `<input type="submit" id="uc-download-link" value="Download anyway"/>` +
      `<input type="hidden" name="id" value="${id}"><input type="hidden" name="export" value="download">` +
      `<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="abc-123"></form></body></html>`;
    routes.set("/uc", (_req, res) =>
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page("FILEID1234567")),
    );
    routes.set("/usercontent/download", serve(payload));
    const dest = join(fresh("drive"), "drive.bin");
    requests.length = 0;
    const result = await download(`${base}/uc?export=download&id=FILEID1234567`, dest, {
      sha256: sha256(payload),
    });
    assert.deepEqual(readFileSync(dest), Buffer.from(payload));
    assert.equal(
      requests[1]?.path,
      "/usercontent/download?id=FILEID1234567&export=download&confirm=t&uuid=abc-123",
    );
    assert.match(result.url, /\/usercontent\/download\?/);
    routes.set("/quota", (_req, res) =>
      res.writeHead(200, { "content-type": "text/html" }).end("<html>Quota exceeded</html>"),
    );
    await rejects(
      download(`${base}/quota`, join(fresh("quota"), "q.bin")),
      "BAD_FILE",
      /quota: the server sent a web page, not the file/,
    );
  });

  test("Google Drive links: share links to the direct form, old-style confirm links", () => {
    const id = "1TNMrFY65ZMre9bWoUvLLKnIYv34h0pLB";
    const direct = `https://drive.google.com/uc?export=download&id=${id}`;
    for (const link of [
      `https://drive.google.com/file/d/${id}/view?usp=sharing`,
      `https://drive.google.com/open?id=${id}`,
      direct,
    ]) {
      assert.equal(driveFileId(link), id);
      assert.equal(driveDownloadUrl(link), direct);
    }
    const folder = "https://drive.google.com/drive/folders/1gMbZ8JlTyPlH2-6HW5NHRe58LmKfJybx";
    assert.equal(driveFileId(folder), null);
    assert.equal(driveDownloadUrl("http://example.org/a.pyth"), "http://example.org/a.pyth");
    const old = `<a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_9&amp;id=${id}">Download anyway</a>`;
    assert.equal(
      driveConfirmUrl(old, direct),
      `https://drive.google.com/uc?export=download&confirm=Xy_9&id=${id}`,
    );
    assert.equal(driveConfirmUrl("<html>no</html>", direct), null);
  });
});

describe("models pull", () => {
  test(
    "pull checks a CVNet checkpoint by loading it and records its sha256",
    sharedOnly,
    async () => {
      const checkpoint = readFileSync(fixture("cvnet_r50_random.pyth"));
      routes.set("/r50.pyth", serve(checkpoint));
      routes.set("/junk.pyth", serve(payload));
      const cache = fresh("pull-cvnet");
      const dir = modelsDir(cache);
      await rejects(
        pullModel("cvnet-r50", { dir, url: `${base}/junk.pyth` }),
        "BAD_FILE",
        /cvnet-r50: the downloaded file is not a CVNet checkpoint .*; it was deleted/,
      );
      await rejects(
        pullModel("cvnet-r101", { dir, url: `${base}/r50.pyth` }),
        "BAD_FILE",
        /cvnet-r101: the downloaded file is a ResNet-50 checkpoint, not ResNet-101; it was deleted/,
      );
      assert.equal(existsSync(join(dir, "CVPR2022_CVNet_R101.pyth")), false);
      const result = await pullModel("cvnet-r50", { dir, url: `${base}/r50.pyth` });
      assert.equal(result.present, false);
      assert.equal(result.sha256, sha256(checkpoint));
      assert.match(result.checked, /loads as a CVNet ResNet-50 checkpoint/);
      const record = readManifest(dir)["CVPR2022_CVNet_R50.pyth"];
      assert.equal(record?.sha256, sha256(checkpoint));
      assert.equal(record?.bytes, checkpoint.length);
      assert.equal(record?.url, `${base}/r50.pyth`);
      assert.equal((await pullModel("cvnet-r50", { dir })).present, true);
      const status = modelStatuses(dir).find((m) => m.name === "cvnet-r50");
      assert.equal(status?.sha256, sha256(checkpoint));
      assert.equal(status?.sha256Published, false);

      const extractor = await Extractor.create({ model: "cvnet-r50", cacheDir: cache, scales: 1 });
      try {
        assert.equal(extractor.info.network, "cvnet-r50");
        assert.equal(extractor.options.depth, 50);
        assert.equal(extractor.dim, 2048);
      } finally {
        await extractor.release();
      }
    },
  );

  test(
    "a part left by a failed pull is continued only from the URL it came from",
    zooOnly,
    async () => {
      const bytes = readFileSync(zooModel);
      routes.set("/a/zoo.onnx", serve(bytes, { breakAt: 2_000_000 }));
      routes.set("/b/zoo.onnx", serve(bytes));
      const dir = fresh("pull-part");
      const file = join(dir, "mobilenetv2-12-int8.onnx");
      await rejects(
        pullModel("mobilenetv2-imagenet", { dir, url: `${base}/a/zoo.onnx`, retries: 0 }),
        "IO_ERROR",
        /a\/zoo\.onnx: the connection broke after 2000000 of 3655033 bytes; .* run the same command again to resume/,
      );
      assert.equal(readFileSync(`${file}.part`).length, 2_000_000);
      assert.equal(readFileSync(`${file}.part.url`, "utf8"), `${base}/a/zoo.onnx`);
      requests.length = 0;
      const other = await pullModel("mobilenetv2-imagenet", { dir, url: `${base}/b/zoo.onnx` });
      assert.deepEqual(
        requests.map((r) => r.range),
        [undefined],
        "another URL: the part is not continued there",
      );
      assert.equal(other.resumed, false);
      assert.deepEqual(readFileSync(file), bytes);
      assert.equal(existsSync(`${file}.part.url`), false);
      assert.equal(readManifest(dir)["mobilenetv2-12-int8.onnx"]?.url, `${base}/b/zoo.onnx`);
    },
  );

  test(
    "`models pull` through the CLI: progress on stderr, the path on stdout, sha256 checked",
    zooOnly,
    async () => {
      const bytes = readFileSync(zooModel);
      routes.set("/zoo/mobilenetv2-12-int8.onnx", serve(bytes, { breakAt: 1_000_000 }));
      routes.set("/zoo/other.onnx", serve(payload));
      const cache = fresh("pull-cli");
      const cli = (...args: string[]) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
          const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
            cwd: repoRoot,
            env: { ...process.env, SUPERGLOBAL_CACHE: cache },
          });
          let stdout = "";
          let stderr = "";
          child.stdout.on("data", (d) => {
            stdout += d;
          });
          child.stderr.on("data", (d) => {
            stderr += d;
          });
          child.on("close", (status) => done({ status, stdout, stderr }));
        });
      const bad = await cli(
        "models",
        "pull",
        "mobilenetv2-imagenet",
        "--url",
        `${base}/zoo/other.onnx`,
      );
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /^superglobal: .*other\.onnx: sha256 mismatch: expected cc028fe6/m);
      assert.doesNotMatch(bad.stderr, /\n\s+at /, "no stack trace");
      const missing = await cli(
        "models",
        "pull",
        "mobilenetv2-imagenet",
        "--url",
        `${base}/zoo/none.onnx`,
      );
      assert.equal(missing.status, 1);
      assert.match(
        missing.stderr,
        /superglobal: http:\/\/127\.0\.0\.1:\d+\/zoo\/none\.onnx: HTTP 404 Not Found/,
      );
      const ok = await cli(
        "models",
        "pull",
        "mobilenetv2-imagenet",
        "--url",
        `${base}/zoo/mobilenetv2-12-int8.onnx`,
      );
      assert.equal(ok.status, 0, ok.stderr);
      const path = join(cache, "models", "mobilenetv2-12-int8.onnx");
      assert.equal(ok.stdout, `${path}\n`);
      assert.match(ok.stderr, /pull mobilenetv2-imagenet \[/);
      assert.match(ok.stderr, /\(resumed\); sha256 cc028fe6.*checked: sha256 \(published\)/);
      assert.deepEqual(readFileSync(path), bytes);
      const again = await cli("models", "pull", "mobilenetv2-imagenet");
      assert.match(again.stderr, /already there/);
      await rejects(
        pullModel("default", { dir: modelsDir(cache) }),
        "INVALID_ARGUMENT",
        /default ships with the npm package: there is nothing to pull/,
      );
      await rejects(
        pullModel("resnet-9000"),
        "NOT_FOUND",
        /no model named "resnet-9000"; known: default, cvnet-r50/,
      );

      // The pulled model by name.
      const byName = await Extractor.create({
        model: "mobilenetv2-imagenet",
        cacheDir: cache,
        scales: 1,
      });
      const byFile = await Extractor.create({
        model: zooModel,
        feature: { input: "rgb-imagenet", output: "627_quantized" },
        scales: 1,
      });
      try {
        assert.equal(
          byName.identity,
          byFile.identity,
          "the identity follows the bytes, not the path",
        );
        assert.equal(byName.info.network, "mobilenetv2-imagenet");
        assert.deepEqual(
          await byName.extract(photos[0] as string),
          await byFile.extract(photos[0] as string),
        );
      } finally {
        await byName.release();
        await byFile.release();
      }
    },
  );
});

describe("ONNX feature networks", () => {
  /** GeM p=3 (clamp 1e-6) + L2 in float64 of a [C, h, w] map. */
  function gem3(map: Float32Array, channels: number): Float64Array {
    const plane = map.length / channels;
    const out = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      let sum = 0;
      for (let i = 0; i < plane; i++) sum += Math.max(map[c * plane + i] as number, 1e-6) ** 3;
      out[c] = (sum / plane) ** (1 / 3);
    }
    const norm = Math.hypot(...out);
    return out.map((v) => v / norm);
  }

  test(
    "GeM descriptors of the zoo's int8 MobileNetV2 equal GeM p=3 of its features, in float64",
    zooOnly,
    async () => {
      const extractor = await Extractor.create({
        model: zooModel,
        feature: { input: "rgb-imagenet" },
        scales: 1,
        gemp: false,
        rgem: false,
      });
      const features = await OnnxSession.create(zooFeatures);
      try {
        assert.equal(extractor.dim, 1280);
        assert.equal(extractor.info.input, "rgb-imagenet");
        assert.equal(extractor.info.network, "mobilenetv2-imagenet", "known by its sha256");
        for (const photo of photos) {
          const tensor = toImagenetRgbTensor(await decodeImage(photo, photo));
          const out = await features.run(
            { input: { data: tensor.data, dims: [1, 3, tensor.height, tensor.width] } },
            ["features"],
          );
          const map = out["features"] as { data: Float32Array; dims: readonly number[] };
          assert.equal(map.dims[1], 1280);
          const expected = gem3(map.data, 1280);
          const got = await extractor.extract(photo);
          let worst = 0;
          for (let i = 0; i < 1280; i++)
            worst = Math.max(worst, Math.abs((got[i] as number) - (expected[i] as number)));
          assert.ok(worst < 1e-5, `${photo}: max |Δ| ${worst}`);
        }
      } finally {
        await extractor.release();
        await features.release();
      }
    },
  );

  test(
    "SuperGlobal descriptors of a feature network: finite, unit-norm; saved and loaded again",
    zooOnly,
    async () => {
      const extractor = await Extractor.create({
        model: zooModel,
        feature: { input: "rgb-imagenet" },
      });
      const saved = join(fresh("saved"), "zoo-sg.onnx");
      try {
        assert.deepEqual(
          [
            extractor.options.scales,
            extractor.options.rgem,
            extractor.options.gemp,
            extractor.options.sgem,
          ],
          [3, true, true, true],
        );
        const first = await extractor.extract(photos[1] as string);
        assert.equal(first.length, 1280);
        assert.ok(first.every(Number.isFinite));
        assert.ok(Math.abs(Math.hypot(...first) - 1) < 1e-5);
        const other = await extractor.extract(photos[2] as string);
        assert.ok(other.every(Number.isFinite));
        await extractor.save(saved);
        const loaded = await Extractor.create({ model: saved });
        try {
          assert.equal(loaded.identity, extractor.identity);
          assert.deepEqual(await loaded.extract(photos[1] as string), first);
        } finally {
          await loaded.release();
        }
      } finally {
        await extractor.release();
      }
    },
  );

  test(
    "the feature tensor: chosen by default, named, dequantised, refused when not 4-D or absent",
    zooOnly,
    async () => {
      const options = { scales: 1 as const, gemp: false, rgem: false };
      const auto = await Extractor.create({
        model: zooModel,
        feature: { input: "rgb-imagenet" },
        ...options,
      });
      const named = await Extractor.create({
        model: zooModel,
        feature: { input: "rgb-imagenet", output: "627_quantized" },
        ...options,
      });
      // The asset's variant already exposes the dequantised map as its output `features`.
      const variant = await Extractor.create({
        model: zooFeatures,
        feature: { input: "rgb-imagenet", output: "features" },
        ...options,
      });
      try {
        assert.equal(auto.identity, named.identity);
        assert.notEqual(variant.identity, auto.identity, "other bytes, other identity");
        const a = await auto.extract(photos[0] as string);
        assert.deepEqual(await named.extract(photos[0] as string), a);
        assert.deepEqual(await variant.extract(photos[0] as string), a);
        const trace = await auto.trace(photos[0] as string);
        assert.equal(trace.scales[0]?.s4?.channels, 1280, "the feature map is the model's s4");
      } finally {
        await auto.release();
        await named.release();
        await variant.release();
      }
      await rejects(
        Extractor.create({ model: zooModel, feature: { input: "rgb-imagenet", output: "output" } }),
        "INVALID_ARGUMENT",
        /output is \[1, 1000\] for a 224×224 image, not a feature map \[1, C, h, w\]/,
      );
      await rejects(
        Extractor.create({ model: zooModel, feature: { input: "rgb-imagenet", output: "nope" } }),
        "INVALID_ARGUMENT",
        /no tensor "nope" in the model \(its outputs: output\)/,
      );
      await rejects(
        Extractor.create({ model: zooModel, feature: { input: "rgb-imagenet" }, depth: 50 }),
        "INVALID_ARGUMENT",
        /depth/,
      );
      await rejects(
        Extractor.create({ model: zooModel, feature: { input: "bgr" as never } }),
        "INVALID_ARGUMENT",
        /feature\.input/,
      );
      await rejects(
        Extractor.create({ checkpoint: "x.pyth", feature: { input: "rgb-imagenet" } }),
        "INVALID_ARGUMENT",
        /feature/,
      );
      const notOnnx = join(fresh("notonnx"), "junk.onnx");
      writeFileSync(notOnnx, payload);
      await rejects(
        Extractor.create({ model: notOnnx, feature: { input: "rgb-imagenet" } }),
        "BAD_FILE",
        /junk\.onnx: not an ONNX model/,
      );
    },
  );

  test(
    "opset: the model keeps its own; at opset 18 the head's reductions take axes as inputs",
    zooOnly,
    async () => {
      const graph = OnnxGraph.fromModel(readFileSync(zooModel));
      assert.equal(graph.opset, 12);
      graph.setOpset(18);
      const at18 = join(fresh("opset"), "zoo-18.onnx");
      writeFileSync(at18, graph.encode());
      // Raising the whole zoo model's opset breaks its own nodes (Unsqueeze took axes as an input
      // from opset 13), which is why a model keeps its opset; its feature map does not need them.
      await rejects(
        Extractor.create({ model: at18, feature: { input: "rgb-imagenet", output: "output" } }),
        "BAD_FILE",
        /onnxruntime cannot load the model cut at output .*Unsqueeze/,
      );
      // By default the feature map is then found alone (the input of the global pooling).
      const options = { feature: { input: "rgb-imagenet" as const }, scales: 1 as const };
      const a = await Extractor.create({ model: zooModel, ...options });
      const b = await Extractor.create({ model: at18, ...options });
      try {
        const da = await a.extract(photos[2] as string);
        const db = await b.extract(photos[2] as string);
        let worst = 0;
        for (let i = 0; i < da.length; i++)
          worst = Math.max(worst, Math.abs((da[i] as number) - (db[i] as number)));
        assert.ok(worst < 1e-6, `max |Δ| ${worst}`);
      } finally {
        await a.release();
        await b.release();
      }
      // A copy under another name is the same model.
      const copy = join(fresh("copy"), "renamed.onnx");
      copyFileSync(zooModel, copy);
      const c = await Extractor.create({ model: copy, ...options });
      try {
        assert.equal(c.info.network, "mobilenetv2-imagenet");
      } finally {
        await c.release();
      }
    },
  );

  test("rgb-imagenet: RGB order, (x/255 − mean)/std in float32", () => {
    const image = { width: 2, height: 1, data: Uint8Array.of(10, 20, 30, 255, 0, 128) }; // BGR
    const t = toImagenetRgbTensor(image);
    const f = Math.fround;
    const norm = (v: number, mean: number, std: number) => f(f(f(v / 255) - f(mean)) / f(std));
    assert.deepEqual(Array.from(t.data), [
      norm(30, 0.485, 0.229),
      norm(128, 0.485, 0.229),
      norm(20, 0.456, 0.224),
      norm(0, 0.456, 0.224),
      norm(10, 0.406, 0.225),
      norm(255, 0.406, 0.225),
    ]);
    assert.ok(Object.keys(MODELS).includes("mobilenetv2-imagenet"));
  });
});
