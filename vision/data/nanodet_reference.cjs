// Reference outputs of NanoDet under @tensorflow/tfjs, for vision/nanodet.py's converter.
//
// Run once by hand when the pinned model changes; the result (nanodet_reference.json) is
// committed and `python -m vision.weights` refuses a conversion that disagrees with it.
//
//   mkdir /tmp/tfjs && cd /tmp/tfjs && npm install @tensorflow/tfjs@4.22.0
//   python -c "from vision.nanodet import graph_input, reference_input; \
//              graph_input(reference_input()).numpy().tofile('/tmp/input.bin')"
//   NODE_PATH=/tmp/tfjs/node_modules node vision/data/nanodet_reference.cjs \
//       <dir>/package/models/nanodet.json /tmp/input.bin vision/data/nanodet_reference.json
//
// The input is the graph's own input (after normalisation), float32 [1, 3, 416, 416].
// Pure-JS CPU backend: slow (seconds) but no native build.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

const OUTPUTS = ["Identity", "Identity_1", "Identity_2", "Identity_3", "Identity_4", "Identity_5"];
const STRIDED = 40;
const TOP = 20;

async function main() {
  const [jsonPath, inputPath, outPath] = process.argv.slice(2);
  const model = JSON.parse(fs.readFileSync(jsonPath, "utf8"));
  const shards = model.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(path.dirname(jsonPath), p))));
  const all = Buffer.concat(shards);
  await tf.setBackend("cpu");
  const graph = await tf.loadGraphModel(
    tf.io.fromMemory({
      modelTopology: model.modelTopology,
      format: model.format,
      generatedBy: model.generatedBy,
      convertedBy: model.convertedBy,
      signature: model.signature,
      weightSpecs: model.weightsManifest.flatMap((g) => g.weights),
      weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
    }),
  );
  const raw = fs.readFileSync(inputPath);
  const input = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [1, 3, 416, 416]);
  const outs = graph.execute({ input_1: input }, OUTPUTS);
  const summary = {
    producer: `@tensorflow/tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}`,
    input: "graph_input(reference_input()) from vision/nanodet.py (nanodet_reference_input.png)",
    outputs: {},
  };
  OUTPUTS.forEach((name, k) => {
    const values = outs[k].dataSync();
    const n = values.length;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[i];
    const order = Array.from(values.keys()).sort((a, b) => values[b] - values[a]);
    const picked = new Set(order.slice(0, TOP));
    for (let j = 0; j < STRIDED; j++) picked.add(Math.floor((j * n) / STRIDED));
    const indices = Array.from(picked).sort((a, b) => a - b);
    summary.outputs[name] = {
      shape: outs[k].shape,
      mean: sum / n,
      indices,
      values: indices.map((i) => values[i]),
    };
  });
  fs.writeFileSync(outPath, JSON.stringify(summary) + "\n");
  console.log(`wrote ${outPath}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
