// Multiply-add cost of an ONNX ranker per candidate, read from the model file itself: every
// Gemm and MatMul whose weight is a 2-D initializer costs 2 × rows × cols FLOPs per input
// row. The server sizes its ranking pool from it (models/registry.ts) and bench:load's floor
// follows whatever ranker the bundle ships (the trainer's default [64, 32] tower or the
// seed's 1024 → 512 → 256 → 128), not a size assumed in advance.
import { readFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export function onnxFlopsPerRow(file: string): number {
  const model = onnx.ModelProto.decode(readFileSync(file));
  const graph = model.graph;
  if (!graph) throw new Error(`${file}: no graph`);
  const dims = new Map<string, number[]>();
  for (const t of graph.initializer ?? []) {
    dims.set(t.name ?? '', (t.dims ?? []).map(Number));
  }
  let flops = 0;
  for (const n of graph.node ?? []) {
    if (n.opType !== 'Gemm' && n.opType !== 'MatMul') continue;
    const w = dims.get(n.input?.[1] ?? '');
    if (w && w.length === 2) flops += 2 * w[0]! * w[1]!;
  }
  return flops;
}
