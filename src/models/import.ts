// Dropping an externally trained ranker (PyTorch or TensorFlow exported to ONNX) into the
// repository: the new version copies the catalog, embeddings and index of an existing
// version and takes the given model.onnx, after ONNX Runtime has loaded it and the config
// has been checked against it (every input fed, every feature known, widths matching).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RankerInputSpec } from './bundle.js';
import { latestVersion, loadBundle, writeVersion } from './repository.js';

export interface ImportRankerOptions {
  repoDir: string;
  name: string;
  modelPath: string;
  configPath: string;
  /** Version whose other artifacts are reused (default: the latest). */
  fromVersion?: number;
}

export interface ImportedRankerConfig {
  inputs: RankerInputSpec[];
  output: string;
  outputKind: 'logit' | 'probability';
}

/** Parses a ranker config (output_kind or outputKind accepted); errors name the field. */
export function parseRankerConfig(text: string, file = 'ranker config'): ImportedRankerConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== 'object') throw new Error(`${file}: expected a JSON object`);
  const inputs = raw.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0)
    throw new Error(`${file}: field 'inputs' must be a non-empty array`);
  const parsed = inputs.map((x: unknown, i: number) => {
    const o = x as Record<string, unknown>;
    if (!o || typeof o.name !== 'string' || o.name === '')
      throw new Error(`${file}: field 'inputs[${i}].name' must be a non-empty string`);
    if (
      !Array.isArray(o.features) ||
      o.features.length === 0 ||
      o.features.some((f) => typeof f !== 'string')
    )
      throw new Error(
        `${file}: field 'inputs[${i}].features' must be a non-empty array of feature names`,
      );
    return { name: o.name, features: o.features as string[] };
  });
  if (typeof raw.output !== 'string' || raw.output === '')
    throw new Error(`${file}: field 'output' must be a non-empty string`);
  const kind = raw.output_kind ?? raw.outputKind ?? 'logit';
  if (kind !== 'logit' && kind !== 'probability')
    throw new Error(
      `${file}: field 'output_kind' must be 'logit' or 'probability', got ${JSON.stringify(kind)}`,
    );
  return { inputs: parsed, output: raw.output, outputKind: kind };
}

export async function importRanker(
  opts: ImportRankerOptions,
): Promise<{ version: number; dir: string; from: number }> {
  const from = opts.fromVersion ?? latestVersion(opts.repoDir, opts.name);
  if (from === undefined)
    throw new Error(`no versions of '${opts.name}' in ${opts.repoDir} to import a ranker into`);
  const base = await loadBundle(join(opts.repoDir, opts.name, String(from)));
  const config = parseRankerConfig(await readFile(opts.configPath, 'utf8'), opts.configPath);
  // Load and check before writing anything: a model that does not fit never reaches disk.
  const { RankerSession } = await import('../ranker/session.js');
  const session = await RankerSession.create(opts.modelPath, config, base.dim);
  await session.release();
  const metrics = Object.fromEntries(
    Object.entries(base.metrics).filter(([k]) => !k.startsWith('ranker_')),
  );
  const out = await writeVersion(opts.repoDir, {
    name: opts.name,
    dim: base.dim,
    items: base.items,
    itemEmbeddings: base.itemEmbeddings,
    userIds: base.userIds,
    userEmbeddings: base.userEmbeddings,
    coldUserEmbedding: base.coldUserEmbedding,
    content: base.content,
    hnswFile: base.hnswPath || undefined,
    hnswMetric: base.hnswMetric,
    ranker: { onnx: opts.modelPath, ...config },
    metrics,
    training: { imported_ranker: opts.modelPath, base_version: from },
  });
  return { version: out.version, dir: out.dir, from };
}
