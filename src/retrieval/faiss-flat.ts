// FAISS IndexFlatIP through the addon: the reference the retrieval benchmark compares the
// exact index against. Ids are row numbers in insertion order. Not used by the server.
import { loadNative, type NativeFaissFlat, type TopK } from './native.js';

export class FaissFlatIndex {
  private constructor(private readonly native: NativeFaissFlat) {}

  static create(dim: number): FaissFlatIndex {
    const ctor = loadNative().NativeFaissFlat;
    if (!ctor) throw new Error('recserve: this addon build has no FAISS');
    return new FaissFlatIndex(new ctor(dim));
  }

  get size(): number {
    return this.native.size;
  }

  add(vectors: Float32Array): void {
    this.native.add(vectors);
  }

  /** threads: OpenMP threads for this call (default: all cores). */
  searchSync(queries: Float32Array, k: number, threads = 0): TopK {
    return this.native.searchSync(queries, k, threads);
  }
}
