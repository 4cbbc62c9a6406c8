/**
 * Batching (a section of `npm run bench -- extract`): would two images of the same size, run as
 * one [2, 3, H, W] batch, go faster than one after the other? The CVNet-R50 backbone from the
 * checkpoint, float32, with its batch dimension made free (the shipped graphs fix it at 1, so this
 * builds its own copy), at each of the three scale sizes of a 1024x768 photo: one batch of two
 * against two runs of one, alternating, same threads, median of `repeat` pairs. Random pixels:
 * convolution time does not depend on the values.
 */
import onnxProto from "onnx-proto";
import { buildBackboneModel } from "../src/backbone/cvnet/resnet-graph.ts";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import { SCALE_SETS } from "../src/descriptor/options.ts";
import { scaledSize } from "../src/image/resize.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { median, SeededRandom } from "./machine.ts";

const { onnx } = onnxProto;

export interface BatchPoint {
  size: string;
  /** Two images one after the other, ms for both. */
  sequential_ms: number;
  /** The same two images as one batch of two, ms. */
  batch_ms: number;
}

/** The model with dimension 0 of every graph input and output made symbolic ("n"). */
function freeBatch(model: Uint8Array): Uint8Array {
  const m = onnx.ModelProto.decode(model);
  for (const v of [...(m.graph?.input ?? []), ...(m.graph?.output ?? [])]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (dims?.[0] !== undefined)
      dims[0] = onnx.TensorShapeProto.Dimension.create({ dimParam: "n" });
  }
  return onnx.ModelProto.encode(m).finish();
}

export async function benchBatch(
  checkpoint: string,
  threads: number,
  repeat: number,
): Promise<BatchPoint[]> {
  const model = freeBatch(buildBackboneModel(loadCheckpoint(checkpoint), { depth: 50 }));
  const session = await OnnxSession.create(model, { threads });
  const rnd = new SeededRandom(7);
  const points: BatchPoint[] = [];
  try {
    for (const scale of SCALE_SETS[3]) {
      const [h, w] = scaledSize(768, 1024, scale);
      const pair = new Float32Array(2 * 3 * h * w);
      for (let i = 0; i < pair.length; i++) pair[i] = rnd.normal();
      const one = (i: number) => ({
        image: { data: pair.subarray(i * 3 * h * w, (i + 1) * 3 * h * w), dims: [1, 3, h, w] },
      });
      const both = { image: { data: pair, dims: [2, 3, h, w] } };
      await session.run(one(0)); // warm-up at this size, both shapes
      await session.run(both);
      const seq: number[] = [];
      const bat: number[] = [];
      for (let r = 0; r < repeat; r++) {
        let t = performance.now();
        await session.run(one(0));
        await session.run(one(1));
        seq.push(performance.now() - t);
        t = performance.now();
        await session.run(both);
        bat.push(performance.now() - t);
      }
      const p = { size: `${h}x${w}`, sequential_ms: median(seq), batch_ms: median(bat) };
      process.stdout.write(
        `batch ${p.size}: two runs of one ${p.sequential_ms.toFixed(0)} ms, one batch of two ${p.batch_ms.toFixed(0)} ms\n`,
      );
      points.push(p);
    }
  } finally {
    await session.release();
  }
  return points;
}

export function batchLines(points: readonly BatchPoint[], threads: number): string[] {
  return [
    `## Batching two same-size images (CVNet-R50 backbone, float32, ${threads} threads)`,
    "",
    "| size | two runs of one, ms | one batch of two, ms | batch speed-up |",
    "|---|---|---|---|",
    ...points.map(
      (p) =>
        `| ${p.size} | ${p.sequential_ms.toFixed(0)} | ${p.batch_ms.toFixed(0)} | ${(p.sequential_ms / p.batch_ms).toFixed(2)}x |`,
    ),
  ];
}
