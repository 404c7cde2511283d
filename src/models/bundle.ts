// A model bundle: everything that must change together, in one consistent item id space
// (catalog, item and user embeddings, the HNSW index, the ranker). A bundle is the unit
// the model repository versions and that a hot-swap replaces. The server holds the
// serving bundle behind ONE reference (models/registry), never copies of its parts.
//
// Item ids are strings on the wire; inside a bundle every item is its row number
// (0..numItems-1) in `items.ids`, and that row number is the id the native indexes store.

export interface ItemCatalog {
  /** External item id of each row. */
  ids: string[];
  /** External id -> row. */
  index: Map<string, number>;
  titles: string[];
  /** Category names; per-item categories reference them by number. */
  categoryNames: string[];
  /** Per item, the numbers of its categories in categoryNames. */
  categories: Uint16Array[];
  creatorIds: string[];
  /** ms since epoch. */
  createdAt: Float64Array;
  /** 0..1 editorial/content quality. */
  quality: Float32Array;
  /** Interaction count in the training data (popularity prior). */
  popularity: Float32Array;
}

export interface RankerInputSpec {
  /** ONNX input name. */
  name: string;
  /** Feature names (from features/catalog.ts) that fill this input's last dimension, in order. */
  features: string[];
}

export interface RankerConfig {
  /** Path of model.onnx, absolute. */
  path: string;
  inputs: RankerInputSpec[];
  /** ONNX output name holding one score (logit or probability) per candidate. */
  output: string;
  outputKind: 'logit' | 'probability';
}

export interface ModelBundle {
  name: string;
  version: number;
  /** Absolute path of models/<name>/<version>/. */
  dir: string;
  dim: number;
  items: ItemCatalog;
  /** numItems × dim, row-major, row r = item r. */
  itemEmbeddings: Float32Array;
  /** Users seen in training. */
  userIds: string[];
  userIndex: Map<string, number>;
  /** numUsers × dim. */
  userEmbeddings: Float32Array;
  /** Embedding for a user with no history (mean of trained users). */
  coldUserEmbedding: Float32Array;
  /** Absolute path of the saved FAISS HNSW index over itemEmbeddings (ids = rows). */
  hnswPath: string;
  ranker: RankerConfig;
  /** Training/eval metrics recorded in the version's config. */
  metrics: Record<string, number>;
}
