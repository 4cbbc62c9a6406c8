import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { crc32, deflateRawSync, gunzipSync } from "node:zlib";
import { loadCheckpoint, loadCheckpointFromBytes } from "../src/checkpoint/load.ts";
import type { StateDict, Tensor } from "../src/checkpoint/state-dict.ts";
import { SuperglobalError } from "../src/errors.ts";
import { assetsDir, fixture, sharedOnly } from "./helpers/shared.ts";

// Two tiny checkpoints written by torch 1.13 itself (gzip + base64), so the strided, offset and
// narrow-dtype paths are checked against real torch.save output. Produced with:
//   base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
//   sd = OrderedDict(t_full=base, t_transpose=base.t(), t_slice=base[1:3, 2:5], t_row=base[2],
//     t_step=torch.arange(20, dtype=torch.float64)[::3],
//     expanded=torch.tensor([1., 2., 3.]).reshape(3, 1).expand(3, 4),
//     chan_last=torch.arange(24.).reshape(2, 3, 2, 2).to(memory_format=torch.channels_last),
//     half=torch.tensor([1.5, -2.25, 65504., 2**-24, 0.333251953125], dtype=torch.float16),
//     bf16=torch.tensor([1.5, -2.25, 2.**100, 0.15625], dtype=torch.bfloat16),
//     bool=torch.tensor([True, False, True]), i8=torch.tensor([-128, 5, 127], dtype=torch.int8),
//     i16=torch.tensor([-32768, 5, 32767], dtype=torch.int16),
//     i32=torch.tensor([[-7, 9], [2**31 - 1, -2**31]], dtype=torch.int32),
//     i64=torch.tensor([2**62, -3]), u8=torch.tensor([0, 255, 7], dtype=torch.uint8),
//     scalar=torch.tensor(3.25), empty=torch.zeros(0, 5),
//     param=torch.nn.Parameter(torch.full((2, 2), 0.5)))
//   sd._metadata = {'': {'version': 1}}
//   obj = {'epoch': np.int64(5), 'state_dict': sd, 'args': {'lr': 0.1}}
//   torch.save(obj, 'synthetic.pth')
//   torch.save(obj, 'synthetic_legacy.pth', _use_new_zipfile_serialization=False)
const SYNTHETIC_ZIP =
  "H4sIAAAAAAACA6VX+3Mb1RVeWZbsbJxECQFCIcEECEpIHEuWFTuE2FGCAiwkzoYU1UCV9WpjCdZand2rgAETEZCSAC2h5f00" +
  "79ACJYHy+AnP8BcUZjqFgZnO9OfOZPpL2x867rkPK/sIduLs+OhYK33fd+7Ze797NaSEWyWpvV0KXMukmOSMl0nRICV9Y0Ej" +
  "WlflPjOb6ZCGXVetZQKkeC6CAKNi6UUI6eXqWGW8S7dso2usapKSZtvauOzomqnZMrTwz+UCGa8YMoRzLQgt9UHrsaNHIKJC" +
  "NK6EcyG8twXadu3ades0XuxFkQi0j+h53SoYuiMbZfqPDAtytPaIKBrkXBSTqZFSOQELG9ChwqIGLFZhSU7GDxyiESNfKOkE" +
  "Yrpumaahk5JVduTddsGwjcIO/ESGpWtVWBZnTCR/oGqacJFOLFsvduWrpGQ6ct42Rqols5AnRtmx7PzBpAzL4/FcG5OwbG3U" +
  "gIs5RM6alkb28psyXMLG1g2X5sKY9UoVVigrCFy2R5GUViXagF8oUSXUgMuPFWkVVxBYqcKq3EJWCrG1slOxHAOuLKJc8eLi" +
  "JcVLi4ygkxJEldYGXKWEKM9qTnA1gWtUuJZVRvKOWdINWOMHX7dHaVdalHAD4lx9LQevI3C9CuvZ0yV527ofNvihXXuUDiVa" +
  "h41KqA7dHJYgkFShR/TPIUYFUhwnWrLDqo6YRrMnvawnCUgj5XICm+hQ2urQp4Tr0M8pNxO4QYUt7FkbD1S0csEowI0zxTB8" +
  "ErYiPkxggOLDtBWD2AqpAds4R4bAdhV25BbQxhe1ct7UHAI3eUh6IMvHtRNJ4rQnGC0Ebo7jMLGvlP8WTncrAUWF23K4fKSi" +
  "Zh6A2z1jvBlvNUe4i5GnYDeSRwgM0QojddhDm6Zyur0E7lBhH6MbOZBIwy89dBk2jRLpJuWdjLIXckjZSuBXbALVYZhS3sUp" +
  "7yZwjwq/5pSWZULeS4m3mnT7GV0aNN7DEdbDOuiUrsDpDAIHVBidWbBFD9n2omY3yUqMbBPcy8nuE2QmJRvjZGUClgoVtgpK" +
  "OFrwsO0tWvaZNWMzuj5wOB0RdFVKd5DT3U/gARXGOV1PEh700N1SPkP2ECPrh4d53yYoGT7iBjyCCaf+IU5YI/CoCoc5YToF" +
  "j3kIb7PKo03Gx1lHEt1QR0qcKw1GWYcjtL6jnO4YgSdUeJJ9s9oHT3kfxDg5sxh+w9kS8Fs+2qfFaI9Ttmc42+8I/F6FZ9kC" +
  "474KzzWnMYMn4XmEhwi8gPC1Yjm/SOAlFV7mZj1WIePwihfVA68iCn32NSqKU7QBrysR2pU3OMMkgTdVeIsxVDRbG4O3f8YY" +
  "2acGMdDx3/GKpOBd3vr3mq1/n7f+BBf5gMAfVPjjUfbmwyPwkQofVyfgT2zh5pFUo5sRfDIBJ3PM809NwKfM4A4atoNuDp8p" +
  "IcdxRtjE1+xRB/48AZ8zddOGL3YOfPUSvV52ql1DSlv79c+u/OlrbCWNoZ/dDmPSdt92uLE7mxnwbIbzuDh5bQBfBvEPo4Yx" +
  "iTGF8XcMaRuKY3RidGMMYgxh7MeoYNQwjmIcx3gRYxLjBMYnGF9uowM8vO3H8n4kojHbAFf7B5jIZlZJ51L/zHV6QPwzyFO7" +
  "yDGRl4u8QuQrRO4UebXI14i8RuS4yOtEXi9yl8jdIidETorcM0jHf3tr/7eT+G5y1vEvla4KjB+f8ErpXMY/+L9pflG94d33" +
  "pmKso7PrJQJ62PAN5zejpOk2KvnNydC/qFWF55DcGpBMZjObpQuZv0Osx3/75up/0uXW2ixAOmsBNwYK6Mlm+udfwGyDXRrQ" +
  "SmUziyT/8xtwBx3Lmkc2nJj7+cWkpJ8fe9klnW//zqx9qn3y+cWnOvBGxxzaab82tjEpzdt/hM/QWqj3UL+RhAdR3xkUXjTj" +
  "PzXhM0PCe04IPzoufKcivIj7z6mfSoV5+U/qHPxna21q+qGQtK+XKq2+bPh7esyX51Dq8yv1ZjOpeU3CqYHYVA06t1L10+v+" +
  "sbNdTPzZ1Df71dPZTHqeSyAkhaj0p489fmzu9R/DOe6T3pTN3HAhe1gtcojqPzj81dvz0u+7QH2pFpGmWQk/VgoFeiCKzlHC" +
  "Fn8J/dlM37xL+C96Pj2XYDpEFxKt5OOvd/z7fP1fHF3O2/97ZKr4l9dH99HjTQtTDLWwvVdouo83ywJVBH/h+/Hu00PMg13S" +
  "JgWORH60e+/1ok8H0Qk/2r2TLvWi24PogLh7V/TC9y8IwgPq7j3NC//uLPDkDPzsG5/7ukMOwnv86u5dyAufOgs85Ye7NxJv" +
  "4zsXBuBJP9pt2V70q0F0oHS3DXvRlY4AOlC520a96B+C6F4/2u2EXnRuUQCd9qPdPuZFfxdEb/Kj3RbkRe9dHED3+dFu2/Ci" +
  "/xpE9/vRbgvwzfUlUtBohpRodL34wqrwhsBEnclrWnn+dgnPiKO/tKT/XMTfh9i9SHTmxEW/z7/7f2aDTqRaFAAA";
const SYNTHETIC_LEGACY =
  "H4sIAAAAAAACA3WW+3cTRRTHN8+W5VW1aFHUiogpYt08miaKtAXktVDaRXR94LLdbJvgNpu7OwEK1sZH0oIvfAOi1nd94xv8" +
  "qX8Kv/qbv3KOnnpnZ5KSRfacmzvZmfnMd+7M3NlK8JRo/XN++5XOw3NDq7srwb1/hfB3EoSY2iYIQsmxiW3YlnbEdNyCXYQA" +
  "NlCXY41VIMQyNbOYK+hFCM6oIr4kEyVTcwvHTRdCkxCOqRF86eZth0BEDqoh/FcoEojKYTVMGXZxDFrkcLlcH5O2N0u2kYeA" +
  "USyPlya6Ddsxu8fLFinojqNPiK6hW7ojQpDVizk6pgghNUjhGQifnJmGiALRmBxSA/huE7QMDg7uXsDH+5EFAq0jhmbYOdNw" +
  "RbNICyIsUVuxMR2fPiCqUSpQJ4ViHJbWYJkCy2uwQoGV3kRdohNTyxUMAm0GxscyDYLhccV9Ts50zNw2rBHhhi4Fbox5JKKN" +
  "li0LbjKI7Rj5bq1MCpYrao45Ui5YOY2YRdd2tCMJEdpjMbXFG8J29DETVrEu4nbL1sl+9lKEm9Ul2Cad7Yn3xnvTEtziBdco" +
  "laFD7hgksHpYFuSwHK3BrXJUDtTgtpN5KmcNgdsVuENd6mkijl50S7Zrwp15HDe/Ku/nduYZ7y7Kw3WrwVo5QLF3M946Avco" +
  "sN5TTDTXKhgm3HsdVoyzuoblVjkoh2qwgWm7j7E2ErhfgW5vExDNsY/CA9chSZwUH5aXydEqJORAFZKMkiLQo0CaR90lZgl6" +
  "GYYHcptdHrHMRiQzjJ1MxqWedDwNWWS3I/tBOuOWKjwkh6qwibEfJrBZgT5vq5jHSnoxZ+agv1lkMplMpJPpDAwgKISgLRQU" +
  "oqHbiqETarCNwR4hsF2BHV4vI68XNUt3Cey8hpZNZ+MJ2MWnvBtpMRo9tCABOYYRwAWRQwT2MO5eAoMK7PNOWF63RmGoafo7" +
  "8VVj8sONwKazqUwGFBwlgqPsp5ojVXiUBvYA4z5G4HEFVI87MoqReqKJu8XboPF0g/3k4gx6e6QUPIXsMLKf9rZmFQ5S9jOM" +
  "rRE4pIDO2LZtwUgzG181uAbXnM32SlI6BTkeZ9OLcxVGKXeMcfMECgocrieHZ5uoW/O606BaV1F7ExKMc2qRU21KLTEqEHAU" +
  "cFk+w0CQJux+mu8a3PIiN57sTcMRzj3Kuccod4JxjxM4ocBzjJtMwGQTd1dxkfr8IjUhYcspHtsKpeLGqMEL6PBovcjILxF4" +
  "WYEqI2PMak3kPZiHG+jpq9Bp3BIziA4i+qSHrsIpKvgVhn2VwGsKvO6Ft5yBN5oXbYIsnrLTi9RkMpWCN3kY3uJheJtS32HU" +
  "dwm8p8D73glm6R7O+BIBYlKSJMFZxAQQcw4xXV2s+wcEzivwIbtLxktkAj66tndWSknwMfYWsPcsFYH7vQafyBEatU8Z6TMC" +
  "nyvwhUcq6Y4+Dl9eJ397tSYx8WL66prBMsksbqg5vkRfN5boG7ZE37LBviPwvQI/zHh/fpyGCwr8VJ6Enz2MhnA9pxMdfpmE" +
  "X1XvivptEn738m79bv5DDriuO+IdIt0Zc+HiJFzy1sZy4M8dfZfO0uecS2/bg/S2bU58AV/+CvoyUMh3nsO+3BHxJemo75y2" +
  "+E5Yq+9kLPHtadG3EZf6ttAy315Y7lvdFb4FWGl2twv/9/zdxwv9zLVy38Z9O/cd3K/hvpP7tdyv43499zHuN3C/kftu7iXu" +
  "49wnuE/2hxraKn1MV39/R5PmCm07wOpnsdw2wNrNo3UO0PaCcBlNomXaDm0WbQhtBm0O7RDaabQLaCW0M2gXB8J8hPm+tvkK" +
  "dG6ufxIJmyvzCycCwoEen5KGQqZqlqu4zBVSZVRRXckQH7nEVc1wFWe4wjmu6OJAPQoBIVAvViJTjdhUIsLCVF3tFfyyo8uN" +
  "borWBZuXuP/fBfY0ei+0BBq1Q/31UnixS9/V9h/bPoPQKAsAAA==";

const unpack = (b64: string) => new Uint8Array(gunzipSync(Buffer.from(b64, "base64")));

const tmp = mkdtempSync(join(tmpdir(), "superglobal-checkpoint-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

// The 112 MB checkpoint is loaded once for the whole file.
let cvnet: StateDict | undefined;
const cvnetSd = (): StateDict => {
  cvnet ??= loadCheckpoint(fixture("cvnet_r50_random.pyth"));
  return cvnet;
};

/** The encoder_q tensors of a CVNet ResNet-50 with their shapes, from spec §3.1. */
function expectedEncoderR50(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const bn = (prefix: string, c: number) => {
    for (const p of ["weight", "bias", "running_mean", "running_var"])
      out.set(`${prefix}.${p}`, [c]);
    out.set(`${prefix}.num_batches_tracked`, []);
  };
  out.set("encoder_q.stem.conv.weight", [64, 3, 7, 7]);
  bn("encoder_q.stem.bn", 64);
  const depths = [3, 4, 6, 3];
  const bottleneck = [64, 128, 256, 512];
  let wIn = 64;
  for (let s = 0; s < 4; s++) {
    const wb = bottleneck[s]!;
    const wOut = wb * 4;
    for (let b = 1; b <= depths[s]!; b++) {
      const p = `encoder_q.s${s + 1}.b${b}`;
      const inC = b === 1 ? wIn : wOut;
      if (b === 1) {
        out.set(`${p}.proj.weight`, [wOut, inC, 1, 1]);
        bn(`${p}.bn`, wOut);
      }
      out.set(`${p}.f.a.weight`, [wb, inC, 1, 1]);
      bn(`${p}.f.a_bn`, wb);
      out.set(`${p}.f.b.weight`, [wb, wb, 3, 3]);
      bn(`${p}.f.b_bn`, wb);
      out.set(`${p}.f.c.weight`, [wOut, wb, 1, 1]);
      bn(`${p}.f.c_bn`, wOut);
    }
    wIn = wOut;
  }
  out.set("encoder_q.head.fc.weight", [2048, 2048]);
  out.set("encoder_q.head.fc.bias", [2048]);
  out.set("encoder_q.head.pool.p", [1]);
  return out;
}

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function assertSameTensor(a: Tensor, b: Tensor, what: string): void {
  assert.equal(a.dtype, b.dtype, `${what}: dtype`);
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  assert.equal(a.data.constructor, b.data.constructor, `${what}: array type`);
  assert.ok(bytesOf(a).equals(bytesOf(b)), `${what}: values`);
}

/** Asserts `fn` throws a SuperglobalError with `code` that names `input` in message and field. */
function assertFails(fn: () => unknown, code: string, input: string, what: string): void {
  assert.throws(
    fn,
    (e: unknown) => {
      assert.ok(e instanceof SuperglobalError, `${what}: ${String(e)}`);
      assert.equal(e.code, code, `${what}: ${e.message}`);
      assert.equal(e.input, input, `${what}: input`);
      assert.ok(e.message.includes(input), `${what}: message names the file: ${e.message}`);
      return true;
    },
    what,
  );
}

test("cvnet_r50_random.pyth: all 321 encoder_q tensors with the spec's shapes", sharedOnly, () => {
  const t0 = performance.now();
  const sd = cvnetSd();
  console.log(`loadCheckpoint(cvnet_r50_random.pyth): ${(performance.now() - t0).toFixed(0)} ms`);
  const expected = expectedEncoderR50();
  assert.equal(expected.size, 321);
  const encoder = [...sd.keys()].filter((k) => k.startsWith("encoder_q."));
  assert.deepEqual([...encoder].sort(), [...expected.keys()].sort());
  for (const [key, shape] of expected) {
    const t = sd.get(key)!;
    assert.deepEqual(t.shape, shape, key);
    const numel = shape.reduce((a, b) => a * b, 1);
    assert.equal(t.data.length, numel, key);
    if (key.endsWith("num_batches_tracked")) {
      assert.equal(t.dtype, "int64", key);
      assert.ok(t.data instanceof BigInt64Array && t.data[0]! >= 0n, key);
    } else {
      assert.equal(t.dtype, "float32", key);
      assert.ok(t.data instanceof Float32Array, key);
    }
  }
  // Everything else is CVNet's reranker, which the checkpoint also carries.
  for (const key of sd.keys()) {
    if (!key.startsWith("encoder_q.")) assert.match(key, /^(cv_learner|conv2ds)\./);
  }
});

test("cvnet_r50_random.pyth: values are sane (finite, BN variances > 0)", sharedOnly, () => {
  const sd = cvnetSd();
  let variances = 0;
  for (const [key, t] of sd) {
    if (!(t.data instanceof Float32Array)) continue;
    for (const v of t.data) assert.ok(Number.isFinite(v), `${key} has a non-finite value`);
    if (key.endsWith(".running_var")) {
      variances++;
      assert.ok(
        t.data.every((v) => v > 0),
        `${key} has a variance <= 0`,
      );
    }
  }
  assert.equal(variances, 53);
  // Not all zeros: the weights are random.
  const fc = sd.get("encoder_q.head.fc.weight")!.data as Float32Array;
  assert.ok(fc.some((v) => v !== 0) && new Set(fc.subarray(0, 1000)).size > 1);
  // Tensors never share memory, so a consumer may modify one safely.
  const buffers = new Set([...sd.values()].map((t) => t.data.buffer));
  assert.equal(buffers.size, sd.size);
});

test("legacy and zip small checkpoints hold the same tensors, equal to cvnet's", sharedOnly, () => {
  const legacy = loadCheckpoint(fixture("legacy_format_small.pth"));
  const zip = loadCheckpoint(fixture("zip_format_small.pth"));
  assert.deepEqual([...legacy.keys()], [...zip.keys()]);
  assert.deepEqual(
    [...zip.keys()],
    [
      "encoder_q.head.fc.bias",
      "encoder_q.head.pool.p",
      "encoder_q.stem.bn.bias",
      "encoder_q.stem.bn.num_batches_tracked",
      "encoder_q.stem.bn.running_mean",
      "encoder_q.stem.bn.running_var",
      "encoder_q.stem.bn.weight",
      "encoder_q.stem.conv.weight",
    ],
  );
  const full = cvnetSd();
  for (const [key, t] of zip) {
    assertSameTensor(legacy.get(key)!, t, `legacy vs zip ${key}`);
    assertSameTensor(t, full.get(key)!, `zip small vs cvnet ${key}`);
  }
  // The same bytes in memory give the same result.
  const input = readFileSync(fixture("zip_format_small.pth"));
  const fromBytes = loadCheckpointFromBytes(input, "zip_format_small.pth");
  for (const [key, t] of zip) assertSameTensor(fromBytes.get(key)!, t, `from bytes ${key}`);
  // The tensors own their memory: none is a view of the Buffer passed in, nor of each other.
  const buffers = new Set([...fromBytes.values()].map((t) => t.data.buffer));
  assert.equal(buffers.size, fromBytes.size);
  assert.ok(!buffers.has(input.buffer));
});

/** The tensors torch.save wrote into the synthetic checkpoints, with their C-order values. */
const SYNTHETIC_EXPECTED: [string, Tensor["dtype"], number[], (number | bigint)[]][] = [
  ["t_full", "float32", [4, 6], range(24, (i) => i)],
  ["t_transpose", "float32", [6, 4], range(24, (i) => (i % 4) * 6 + Math.floor(i / 4))],
  ["t_slice", "float32", [2, 3], [8, 9, 10, 14, 15, 16]],
  ["t_row", "float32", [6], [12, 13, 14, 15, 16, 17]],
  ["t_step", "float64", [7], [0, 3, 6, 9, 12, 15, 18]],
  ["expanded", "float32", [3, 4], range(12, (i) => Math.floor(i / 4) + 1)],
  ["chan_last", "float32", [2, 3, 2, 2], range(24, (i) => i)],
  ["half", "float16", [5], [1.5, -2.25, 65504, 2 ** -24, 0.333251953125]],
  ["bf16", "float32", [4], [1.5, -2.25, 2 ** 100, 0.15625]],
  ["bool", "bool", [3], [1, 0, 1]],
  ["i8", "int32", [3], [-128, 5, 127]],
  ["i16", "int32", [3], [-32768, 5, 32767]],
  ["i32", "int32", [2, 2], [-7, 9, 2 ** 31 - 1, -(2 ** 31)]],
  ["i64", "int64", [2], [2n ** 62n, -3n]],
  ["u8", "uint8", [3], [0, 255, 7]],
  ["scalar", "float32", [], [3.25]],
  ["empty", "float32", [0, 5], []],
  ["param", "float32", [2, 2], [0.5, 0.5, 0.5, 0.5]],
];

function range(n: number, f: (i: number) => number): number[] {
  return Array.from({ length: n }, (_, i) => f(i));
}

for (const [label, b64] of [
  ["zip", SYNTHETIC_ZIP],
  ["legacy", SYNTHETIC_LEGACY],
] as const) {
  test(`torch-written ${label} checkpoint: strides, offsets, shared storages, every dtype`, () => {
    const sd = loadCheckpointFromBytes(unpack(b64), `synthetic_${label}.pth`);
    // `state_dict` is unwrapped; `epoch` (a numpy scalar) and `args` are not tensors.
    assert.deepEqual(
      [...sd.keys()],
      SYNTHETIC_EXPECTED.map(([k]) => k),
    );
    for (const [key, dtype, shape, values] of SYNTHETIC_EXPECTED) {
      const t = sd.get(key)!;
      assert.equal(t.dtype, dtype, key);
      assert.deepEqual(t.shape, shape, key);
      assert.deepEqual([...t.data], values, key);
    }
    assert.ok(sd.get("half")!.data instanceof Float32Array);
    assert.ok(sd.get("bool")!.data instanceof Uint8Array);
    assert.ok(sd.get("i8")!.data instanceof Int32Array);
    // t_full, t_transpose, t_slice and t_row share one storage but not their memory.
    assert.equal(new Set([...sd.values()].map((t) => t.data.buffer)).size, sd.size);
  });
}

// ---- zip container variants (deflate, zip64), re-packed from the torch-written archive ----

interface Record_ {
  name: string;
  data: Uint8Array;
}

/** The records of a zip, through its central directory (test-side, minimal). */
function zipRecords(zip: Uint8Array): Record_[] {
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const eocd = zip.length - 22;
  assert.equal(dv.getUint32(eocd, true), 0x06054b50);
  const count = dv.getUint16(eocd + 10, true);
  let p = dv.getUint32(eocd + 16, true);
  const out: Record_[] = [];
  for (let i = 0; i < count; i++) {
    const size = dv.getUint32(p + 20, true);
    const n = dv.getUint16(p + 28, true);
    const local = dv.getUint32(p + 42, true);
    const name = Buffer.from(zip.subarray(p + 46, p + 46 + n)).toString("utf8");
    const start = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    out.push({ name, data: zip.subarray(start, start + size) });
    p += 46 + n + dv.getUint16(p + 30, true) + dv.getUint16(p + 32, true);
  }
  return out;
}

/** A zip of `records`, deflated or stored, optionally with every size/offset in zip64 fields. */
function writeZip(records: Record_[], options: { deflate: boolean; zip64: boolean }): Uint8Array {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const r of records) {
    const name = Buffer.from(r.name, "utf8");
    const body = options.deflate ? deflateRawSync(r.data) : Buffer.from(r.data);
    const crc = crc32(r.data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(options.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(r.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const extra = Buffer.alloc(options.zip64 ? 28 : 0);
    if (options.zip64) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(r.data.length), 4);
      extra.writeBigUInt64LE(BigInt(body.length), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(options.deflate ? 8 : 0, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(options.zip64 ? 0xffffffff : body.length, 20);
    cd.writeUInt32LE(options.zip64 ? 0xffffffff : r.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt16LE(extra.length, 30);
    cd.writeUInt32LE(options.zip64 ? 0xffffffff : offset, 42);
    central.push(cd, name, extra);
    parts.push(local, name, body);
    offset += 30 + name.length + body.length;
  }
  const cdBytes = Buffer.concat(central);
  const tail: Buffer[] = [];
  if (options.zip64) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeBigUInt64LE(BigInt(records.length), 24);
    rec.writeBigUInt64LE(BigInt(records.length), 32);
    rec.writeBigUInt64LE(BigInt(cdBytes.length), 40);
    rec.writeBigUInt64LE(BigInt(offset), 48);
    const locator = Buffer.alloc(20);
    locator.writeUInt32LE(0x07064b50, 0);
    locator.writeBigUInt64LE(BigInt(offset + cdBytes.length), 8);
    locator.writeUInt32LE(1, 16);
    tail.push(rec, locator);
  }
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(options.zip64 ? 0xffff : records.length, 8);
  eocd.writeUInt16LE(options.zip64 ? 0xffff : records.length, 10);
  eocd.writeUInt32LE(options.zip64 ? 0xffffffff : cdBytes.length, 12);
  eocd.writeUInt32LE(options.zip64 ? 0xffffffff : offset, 16);
  return new Uint8Array(Buffer.concat([...parts, cdBytes, ...tail, eocd]));
}

test("zip variants: deflated records and zip64 archives load the same tensors", () => {
  const original = unpack(SYNTHETIC_ZIP);
  const expected = loadCheckpointFromBytes(original, "synthetic.pth");
  const records = zipRecords(original);
  assert.ok(records.some((r) => r.name.endsWith("/data.pkl")));
  for (const deflate of [false, true]) {
    for (const zip64 of [false, true]) {
      const what = `deflate=${deflate} zip64=${zip64}`;
      const sd = loadCheckpointFromBytes(writeZip(records, { deflate, zip64 }), what);
      assert.deepEqual([...sd.keys()], [...expected.keys()], what);
      for (const [key, t] of expected) assertSameTensor(sd.get(key)!, t, `${what} ${key}`);
    }
  }
  // A zip that is not a torch.save archive.
  const notTorch = join(tmp, "plain.zip");
  writeFileSync(
    notTorch,
    writeZip([{ name: "a.txt", data: Buffer.from("hi") }], { deflate: false, zip64: false }),
  );
  assertFails(() => loadCheckpoint(notTorch), "BAD_FILE", notTorch, "zip without data.pkl");
});

// ---- errors ----

test("a missing file is NOT_FOUND naming it; a directory is BAD_FILE", () => {
  const missing = join(tmp, "no-such-checkpoint.pyth");
  assertFails(() => loadCheckpoint(missing), "NOT_FOUND", missing, "missing file");
  const dir = join(tmp, "a-directory.pth");
  mkdirSync(dir);
  assertFails(() => loadCheckpoint(dir), "BAD_FILE", dir, "directory");
  assert.throws(
    () => loadCheckpoint(""),
    (e: unknown) => e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT",
  );
});

/** Deterministic pseudo-random bytes (mulberry32). */
function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
  }
  return out;
}

test("random bytes, JSON, an empty file and a zip-looking or pickle-looking prefix are BAD_FILE", () => {
  const cases: [string, Uint8Array][] = [
    ["random.pth", randomBytes(4096, 1).map((b, i) => (i === 0 ? 0x13 : b))],
    // Looks like a pickle (PROTO 2), then noise.
    ["random-pickle.pth", Uint8Array.of(0x80, 0x02, ...randomBytes(4096, 2))],
    // Looks like a zip (local header magic), then noise.
    ["random-zip.pth", Uint8Array.of(0x50, 0x4b, 0x03, 0x04, ...randomBytes(4096, 3))],
    ["model.json", Buffer.from(JSON.stringify({ model_state: { w: [1, 2, 3] } }))],
    ["empty.pth", new Uint8Array(0)],
  ];
  for (const [name, bytes] of cases) {
    const path = join(tmp, name);
    writeFileSync(path, bytes);
    assertFails(() => loadCheckpoint(path), "BAD_FILE", path, name);
    assertFails(() => loadCheckpointFromBytes(bytes, name), "BAD_FILE", name, `${name} (bytes)`);
  }
});

test("plain pickles and JSON from the shared assets are not checkpoints", sharedOnly, () => {
  for (const name of ["gnd_roxford5k.pkl", "gnd_roxford5k.json"]) {
    const path = join(assetsDir, "revisitop-gnd", name);
    assertFails(() => loadCheckpoint(path), "BAD_FILE", path, name);
  }
});

test(
  "truncated and corrupted copies of the checkpoints are BAD_FILE naming the file",
  sharedOnly,
  () => {
    // The big one, cut in half (its zip directory is gone) and cut just before its last bytes.
    const big = readFileSync(fixture("cvnet_r50_random.pyth"));
    for (const [name, end] of [
      ["cvnet-half.pyth", Math.floor(big.length / 2)],
      ["cvnet-minus-10.pyth", big.length - 10],
    ] as const) {
      const path = join(tmp, name);
      writeFileSync(path, big.subarray(0, end));
      assertFails(() => loadCheckpoint(path), "BAD_FILE", path, name);
      rmSync(path);
    }
    // The small ones, cut at many points: inside every pickle, storage header and storage.
    for (const file of ["legacy_format_small.pth", "zip_format_small.pth"]) {
      const bytes = readFileSync(fixture(file));
      for (const end of [
        1,
        2,
        14,
        16,
        60,
        137,
        500,
        1041,
        1100,
        1180,
        1190,
        5000,
        30000,
        bytes.length - 1,
      ]) {
        const path = join(tmp, `${file}-${end}`);
        writeFileSync(path, bytes.subarray(0, end));
        assertFails(() => loadCheckpoint(path), "BAD_FILE", path, `${file} cut at ${end}`);
      }
    }
    // One flipped byte inside a storage record of the zip: its CRC no longer matches.
    const zip = Buffer.from(readFileSync(fixture("zip_format_small.pth")));
    zip[2000] = (zip[2000]! ^ 0x55) & 0xff;
    const corrupt = join(tmp, "zip-corrupt.pth");
    writeFileSync(corrupt, zip);
    assertFails(() => loadCheckpoint(corrupt), "BAD_FILE", corrupt, "flipped byte");
    assert.throws(() => loadCheckpoint(corrupt), /CRC/);
  },
);
