// ONNX export of the Deep & Wide ranker, written with onnx-proto (protobufjs classes for
// onnx.proto). The graph mirrors DeepWideModel.forward node for node:
//
//   deep ─Sub(mean)─Mul(1/std)─Gemm─Relu─…─Gemm ─┐
//   wide ─Sub(mean)─Mul(1/std)─MatMul ───────────Add─Reshape[-1]─► logit [batch]
//
// Inputs are [batch, width] with a symbolic "batch" dimension, so one session scores any
// number of candidates.
import onnxProto from 'onnx-proto';
import type { DeepWideModel, FArray } from './mlp.js';

const { onnx } = onnxProto;

export const OPSET = 13;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

/** A float32 initializer (raw little-endian bytes, the compact encoding). */
export function floatTensor(name: string, dims: number[], values: FArray | number[]) {
  const data = values instanceof Float32Array ? values : Float32Array.from(values);
  if (data.length !== dims.reduce((a, b) => a * b, 1)) {
    throw new Error(`onnx tensor ${name}: ${data.length} values do not fill dims [${dims}]`);
  }
  const bytes = new Uint8Array(
    data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
  );
  return onnx.TensorProto.create({ name, dims, dataType: FLOAT, rawData: bytes });
}

export function int64Tensor(name: string, dims: number[], values: number[]) {
  const data = BigInt64Array.from(values.map((v) => BigInt(v)));
  return onnx.TensorProto.create({
    name,
    dims,
    dataType: INT64,
    rawData: new Uint8Array(data.buffer),
  });
}

/** A float tensor value info; a string dimension is symbolic (e.g. "batch"). */
export function floatValueInfo(name: string, dims: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: FLOAT,
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) =>
            typeof d === 'string'
              ? onnx.TensorShapeProto.Dimension.create({ dimParam: d })
              : onnx.TensorShapeProto.Dimension.create({ dimValue: d }),
          ),
        }),
      }),
    }),
  });
}

export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, number> = {},
) {
  return onnx.NodeProto.create({
    opType,
    input: inputs,
    output: outputs,
    name: `${opType}_${outputs[0]}`,
    attribute: Object.entries(attrs).map(([name, v]) =>
      Number.isInteger(v)
        ? onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: v })
        : onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v }),
    ),
  });
}

export interface GraphParts {
  name: string;
  nodes: ReturnType<typeof node>[];
  initializers: ReturnType<typeof floatTensor>[];
  inputs: ReturnType<typeof floatValueInfo>[];
  outputs: ReturnType<typeof floatValueInfo>[];
  docString?: string;
}

/** Serialises a graph as an ONNX model (IR 8, default-domain opset 13). */
export function encodeModel(g: GraphParts): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'recserve',
    producerVersion: '0.1.0',
    docString: g.docString ?? '',
    opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: OPSET })],
    graph: onnx.GraphProto.create({
      name: g.name,
      node: g.nodes,
      initializer: g.initializers,
      input: g.inputs,
      output: g.outputs,
    }),
  });
  return onnx.ModelProto.encode(model).finish();
}

export interface ExportNames {
  deep: string;
  wide: string;
  output: string;
}

export const DEFAULT_NAMES: ExportNames = { deep: 'deep', wide: 'wide', output: 'logit' };

/** The trained model as ONNX bytes; output is the logit, shape [batch]. */
export function exportDeepWide(
  model: DeepWideModel,
  names: ExportNames = DEFAULT_NAMES,
): Uint8Array {
  const { deepIn, wideIn, hidden } = model.shape;
  const sizes = [deepIn, ...hidden, 1];
  const nodes = [];
  const inits = [
    floatTensor('deep_mean', [deepIn], model.deepMean),
    floatTensor('deep_inv_std', [deepIn], model.deepInvStd),
  ];
  nodes.push(node('Sub', [names.deep, 'deep_mean'], ['deep_centered']));
  nodes.push(node('Mul', ['deep_centered', 'deep_inv_std'], ['deep_norm']));
  let prev = 'deep_norm';
  for (let l = 0; l < model.weights.length; l++) {
    inits.push(floatTensor(`W${l}`, [sizes[l]!, sizes[l + 1]!], model.weights[l]!));
    inits.push(floatTensor(`b${l}`, [sizes[l + 1]!], model.biases[l]!));
    const last = l + 1 === model.weights.length;
    const out = last ? 'deep_logit' : `h${l}`;
    nodes.push(node('Gemm', [prev, `W${l}`, `b${l}`], [out]));
    if (!last) {
      nodes.push(node('Relu', [out], [`a${l}`]));
      prev = `a${l}`;
    }
  }
  const graphInputs = [floatValueInfo(names.deep, ['batch', deepIn])];
  let sum = 'deep_logit';
  if (wideIn > 0) {
    graphInputs.push(floatValueInfo(names.wide, ['batch', wideIn]));
    inits.push(floatTensor('wide_mean', [wideIn], model.wideMean));
    inits.push(floatTensor('wide_inv_std', [wideIn], model.wideInvStd));
    inits.push(floatTensor('wide_w', [wideIn, 1], model.wide));
    nodes.push(node('Sub', [names.wide, 'wide_mean'], ['wide_centered']));
    nodes.push(node('Mul', ['wide_centered', 'wide_inv_std'], ['wide_norm']));
    nodes.push(node('MatMul', ['wide_norm', 'wide_w'], ['wide_logit']));
    nodes.push(node('Add', ['deep_logit', 'wide_logit'], ['sum_logit']));
    sum = 'sum_logit';
  }
  inits.push(int64Tensor('flat_shape', [1], [-1]));
  nodes.push(node('Reshape', [sum, 'flat_shape'], [names.output]));
  return encodeModel({
    name: 'recserve_deep_wide_ranker',
    nodes,
    initializers: inits,
    inputs: graphInputs,
    outputs: [floatValueInfo(names.output, ['batch'])],
    docString: `Deep & Wide ranker: deep [${sizes.join('→')}], wide ${wideIn} → logit`,
  });
}
