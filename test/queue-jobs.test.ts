/**
 * The job queue's pure parts (queue/jobs.ts, queue/connection.ts): URL and name checks, job ids,
 * payload and result checks, descriptors through base64. The end-to-end runs are in
 * queue.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { checkQueueName, parseQueueUrl } from "../src/queue/connection.ts";
import {
  checkPayload,
  checkResult,
  decodeDescriptor,
  encodeDescriptor,
  jobIdOf,
  jobOptions,
  workerLockOptions,
} from "../src/queue/jobs.ts";

const invalid = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(
    fn,
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && pattern.test(e.message),
  );

test("queue URLs: redis://HOST[:PORT][/DB], passwords kept out of messages", () => {
  assert.deepEqual(parseQueueUrl("redis://example.org:7000"), {
    host: "example.org",
    port: 7000,
    db: 0,
    tls: false,
    display: "redis://example.org:7000",
  });
  const full = parseQueueUrl("rediss://me:s%40cret@10.0.0.2/3");
  assert.equal(full.port, 6379);
  assert.equal(full.db, 3);
  assert.equal(full.username, "me");
  assert.equal(full.password, "s@cret");
  assert.equal(full.tls, true);
  assert.doesNotMatch(full.display, /cret/);
  assert.equal(parseQueueUrl("redis://[::1]:6380").host, "::1");
  for (const bad of [
    "http://x:1",
    "localhost:6379",
    "redis://",
    "redis://h/x",
    "redis://h?a=1",
    "",
  ]) {
    invalid(() => parseQueueUrl(bad), /redis:\/\/HOST:PORT/);
  }
  invalid(() => parseQueueUrl(6379), /queue/);
  assert.equal(checkQueueName("photos-2026.v1"), "photos-2026.v1");
  for (const bad of ["", "a:b", "a b", "x".repeat(101), 3])
    invalid(() => checkQueueName(bad), /queue name/);
});

test("job ids: the same file state for the same model is the same id, any change another", () => {
  const file = { path: "/photos/a.jpg", size: 1000, mtimeMs: 1700000000000.5 };
  const id = jobIdOf("model-a", file);
  assert.match(id, /^sg-[0-9a-f]{40}$/);
  assert.equal(jobIdOf("model-a", { ...file }), id);
  const others = [
    jobIdOf("model-b", file),
    jobIdOf("model-a", { ...file, path: "/photos/b.jpg" }),
    jobIdOf("model-a", { ...file, size: 1001 }),
    jobIdOf("model-a", { ...file, mtimeMs: 1700000000001 }),
  ];
  assert.equal(new Set([id, ...others]).size, 5);
});

test("payloads and results read back from Redis are checked", () => {
  const good = {
    path: "/p/a.jpg",
    size: 3,
    mtimeMs: 5,
    hash: "a".repeat(64),
    model: "m",
    spec: {},
  };
  assert.deepEqual(checkPayload(good, "j1"), good);
  invalid(() => checkPayload(null, "j1"), /job j1: its data is not an object/);
  invalid(() => checkPayload({ ...good, path: "" }, "j1"), /no path/);
  invalid(() => checkPayload({ ...good, size: -1 }, "j1"), /bad size/);
  invalid(() => checkPayload({ ...good, mtimeMs: Number.NaN }), /bad mtime/);
  invalid(() => checkPayload({ ...good, hash: "xyz" }), /bad hash/);
  invalid(() => checkPayload({ ...good, model: "" }), /no model identity/);
  invalid(() => checkPayload({ ...good, spec: [] }), /no model spec/);
  assert.deepEqual(checkResult({ ok: false, reason: "bad" }), { ok: false, reason: "bad" });
  invalid(() => checkResult({ ok: true }, "j2"), /job j2: its result/);
  invalid(() => checkResult("x"), /its result/);
});

test("descriptors travel as base64 float32, bit for bit", () => {
  const v = new Float32Array([0.1, -0, 1e-40, -3.5, Math.PI, 65504.25]);
  const back = decodeDescriptor(encodeDescriptor(v.subarray(1)), 5);
  assert.deepEqual(new Uint8Array(back.buffer), new Uint8Array(v.slice(1).buffer));
  invalid(
    () => decodeDescriptor(encodeDescriptor(v), 5, "j3"),
    /job j3: the descriptor has 24 bytes, not 20/,
  );
});

test("retry and stalled-job settings: defaults and bounds", () => {
  assert.deepEqual(jobOptions(), { attempts: 3, backoff: { type: "exponential", delay: 1000 } });
  assert.deepEqual(workerLockOptions({ lockMs: 2000, stalledMs: 500 }), {
    lockDuration: 2000,
    stalledInterval: 500,
    maxStalledCount: 2,
  });
  invalid(() => jobOptions({ attempts: 0 }), /attempts/);
  invalid(() => workerLockOptions({ lockMs: 1.5 }), /lockMs/);
});
