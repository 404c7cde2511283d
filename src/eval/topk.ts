// Top-k selection over a dense score array with an exclusion mask: a bounded min-heap,
// O(n log k), no full sort of the catalog.

/**
 * Rows of the k highest scores (descending), skipping rows where `exclude[row]` is set
 * (when given) and rows whose score is NaN or -Infinity. Ties keep the lower row first.
 */
export function topK(scores: ArrayLike<number>, k: number, exclude?: Uint8Array): Int32Array {
  const n = scores.length;
  const heapIdx = new Int32Array(k);
  const heapVal = new Float64Array(k);
  let size = 0;
  // "a ranks below b": lower score, or equal score and higher row.
  const below = (va: number, ia: number, vb: number, ib: number): boolean =>
    va < vb || (va === vb && ia > ib);
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && below(heapVal[l], heapIdx[l], heapVal[m], heapIdx[m])) m = l;
      if (r < size && below(heapVal[r], heapIdx[r], heapVal[m], heapIdx[m])) m = r;
      if (m === i) return;
      const tv = heapVal[i];
      const ti = heapIdx[i];
      heapVal[i] = heapVal[m];
      heapIdx[i] = heapIdx[m];
      heapVal[m] = tv;
      heapIdx[m] = ti;
      i = m;
    }
  };
  for (let row = 0; row < n; row++) {
    if (exclude && exclude[row]) continue;
    const v = scores[row];
    if (!(v > -Infinity)) continue;
    if (size < k) {
      let i = size++;
      heapVal[i] = v;
      heapIdx[i] = row;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!below(heapVal[i], heapIdx[i], heapVal[p], heapIdx[p])) break;
        const tv = heapVal[i];
        const ti = heapIdx[i];
        heapVal[i] = heapVal[p];
        heapIdx[i] = heapIdx[p];
        heapVal[p] = tv;
        heapIdx[p] = ti;
        i = p;
      }
    } else if (k > 0 && below(heapVal[0], heapIdx[0], v, row)) {
      heapVal[0] = v;
      heapIdx[0] = row;
      siftDown(0);
    }
  }
  const out = new Int32Array(size);
  for (let i = size - 1; i >= 0; i--) {
    out[i] = heapIdx[0];
    heapVal[0] = heapVal[size - 1];
    heapIdx[0] = heapIdx[size - 1];
    size--;
    siftDown(0);
  }
  return out;
}

/** scores[i] = dot(query, M[i]) for a row-major n×d matrix. */
export function dotAll(
  query: Float32Array,
  M: Float32Array,
  d: number,
  out?: Float32Array,
): Float32Array {
  const n = M.length / d;
  const s = out ?? new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let acc = 0;
    for (let j = 0; j < d; j++) acc += query[j] * M[o + j];
    s[i] = acc;
  }
  return s;
}
