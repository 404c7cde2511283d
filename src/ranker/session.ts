// An ONNX Runtime session for a ranker, checked against its config once at load time.
//
// onnxruntime-node's run() blocks the calling thread for the whole inference, so this is
// meant to live inside a Piscina worker (one session per worker), never on the main thread.
// Thread counts are deliberate. ORT's intra-op pool spins while it waits for work by
// default; on this 2-core machine, shared with the event loop and other workers, 2 intra-op
// threads WITH spinning ran the default ranker at 0.40-0.57× the candidates/s of one thread
// (batches 16-1024), and 2 threads WITHOUT spinning at 0.7-2.0× (it swings with whatever
// else the machine runs). So spinning is off here (allowSpinning), and the default is one
// intra-op and one inter-op thread per session: parallelism comes from one session per
// worker, which leaves the other core to the event loop and the addon's threads.
// `npm run bench:ranker` measures all three in one run.
import * as ort from 'onnxruntime-node';
import { compileRankerInputs, type CompiledInput } from '../features/assemble.js';
import type { RankerConfig } from '../models/bundle.js';
import { sigmoid } from './mlp.js';

export interface RankerSessionOptions {
  /** Threads ONNX Runtime may use inside one operator. Default 1 (see the file comment). */
  intraOpNumThreads?: number;
  /** Threads for running independent graph nodes in parallel. Default 1. */
  interOpNumThreads?: number;
  /**
   * Let ORT's thread pools spin while waiting for work. Default false: with more than one
   * thread, spinning made the ranker 2-3× slower on 2 shared cores (see the file comment).
   */
  allowSpinning?: boolean;
}

/** The parts of a RankerConfig a session needs (path is optional when bytes are given). */
export type RankerModelConfig = Pick<RankerConfig, 'inputs' | 'output' | 'outputKind'>;

export class RankerSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly config: RankerModelConfig,
    readonly plan: CompiledInput[],
  ) {}

  /**
   * Loads a model (a file path or the model's bytes) and checks it against `config` for a
   * bundle of embedding dimension `dim`: every config input must exist in the model with a
   * last dimension equal to its features' width, every model input must be fed, the output
   * must exist, and every feature name must be known. Each failure throws an Error naming
   * the input, output or feature.
   */
  static async create(
    model: string | Uint8Array,
    config: RankerModelConfig,
    dim: number,
    opts: RankerSessionOptions = {},
  ): Promise<RankerSession> {
    if (config.outputKind !== 'logit' && config.outputKind !== 'probability') {
      throw new Error(
        `ranker outputKind: must be 'logit' or 'probability', got ${String(config.outputKind)}`,
      );
    }
    const plan = compileRankerInputs(config.inputs, dim);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: opts.intraOpNumThreads ?? 1,
      interOpNumThreads: opts.interOpNumThreads ?? 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: {
        session: {
          intra_op: { allow_spinning: opts.allowSpinning ? '1' : '0' },
          inter_op: { allow_spinning: opts.allowSpinning ? '1' : '0' },
        },
      },
    };
    const session =
      typeof model === 'string'
        ? await ort.InferenceSession.create(model, sessionOptions)
        : await ort.InferenceSession.create(model, sessionOptions);
    try {
      checkAgainstModel(session, config, plan);
    } catch (err) {
      await session.release();
      throw err;
    }
    return new RankerSession(session, config, plan);
  }

  /** ONNX input name -> floats per row, in config order. */
  get inputWidths(): Record<string, number> {
    return Object.fromEntries(this.plan.map((p) => [p.name, p.width]));
  }

  /**
   * The model's raw output (logit or probability, per config.outputKind), one per row.
   * `inputs` is assembleRankerInput's result; every input must hold the same row count.
   */
  async scoreRaw(inputs: Record<string, Float32Array>): Promise<Float32Array> {
    let rows = -1;
    const feeds: Record<string, ort.Tensor> = {};
    for (const p of this.plan) {
      const data = inputs[p.name];
      if (!(data instanceof Float32Array)) {
        throw new Error(`ranker input '${p.name}': missing (expected a Float32Array)`);
      }
      if (data.length % p.width !== 0) {
        throw new Error(
          `ranker input '${p.name}': length ${data.length} is not a multiple of width ${p.width}`,
        );
      }
      const n = data.length / p.width;
      if (rows >= 0 && n !== rows) {
        throw new Error(`ranker input '${p.name}': ${n} rows, but another input has ${rows}`);
      }
      rows = n;
      feeds[p.name] = new ort.Tensor('float32', data, [n, p.width]);
    }
    if (rows === 0) return new Float32Array(0);
    const result = await this.session.run(feeds, [this.config.output]);
    const out = result[this.config.output];
    if (!out || !(out.data instanceof Float32Array)) {
      throw new Error(`ranker output '${this.config.output}': missing or not float32`);
    }
    if (out.data.length !== rows) {
      throw new Error(
        `ranker output '${this.config.output}': ${out.data.length} values for ${rows} rows (want one score per row)`,
      );
    }
    // Copy out of ORT's buffer: the tensor is disposed below and the result may be transferred.
    const scores = Float32Array.from(out.data);
    out.dispose();
    return scores;
  }

  /** Probabilities in 0..1 (a logit model's output passed through the sigmoid). */
  async score(inputs: Record<string, Float32Array>): Promise<Float32Array> {
    const raw = await this.scoreRaw(inputs);
    if (this.config.outputKind === 'logit')
      for (let i = 0; i < raw.length; i++) raw[i] = sigmoid(raw[i]!);
    return raw;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

function checkAgainstModel(
  session: ort.InferenceSession,
  config: RankerModelConfig,
  plan: CompiledInput[],
): void {
  const modelInputs = new Set(session.inputNames);
  for (const p of plan) {
    if (!modelInputs.has(p.name)) {
      throw new Error(
        `ranker input '${p.name}': the model has no such input (it has ${session.inputNames.join(', ')})`,
      );
    }
  }
  for (const name of session.inputNames) {
    if (!plan.some((p) => p.name === name)) {
      throw new Error(
        `ranker input '${name}': the model needs it but the config maps no features to it`,
      );
    }
  }
  if (!session.outputNames.includes(config.output)) {
    throw new Error(
      `ranker output '${config.output}': the model has no such output (it has ${session.outputNames.join(', ')})`,
    );
  }
  // Check widths where the model declares a fixed last dimension.
  const meta = session.inputMetadata;
  for (const m of meta) {
    if (!m.isTensor) continue;
    const p = plan.find((x) => x.name === m.name);
    const last = m.shape[m.shape.length - 1];
    if (p && typeof last === 'number' && last > 0 && last !== p.width) {
      throw new Error(
        `ranker input '${p.name}': the model expects ${last} floats per row, its features make ${p.width}`,
      );
    }
  }
}
