// Worker side of trainAlsParallel: the factor matrices and both CSR views live in
// SharedArrayBuffers; each message runs one kernel of als.ts over a row range and replies
// when done. No state beyond the shared arrays, so any worker can take any range.
import { parentPort } from 'node:worker_threads';
import { gramRange, rotateRange, solveRange } from './als.js';

export interface SideArrays {
  F: Float32Array;
  ptr: Int32Array;
  idx: Int32Array;
  wts: Float32Array;
}

export type AlsWorkerMessage =
  | { op: 'init'; d: number; sides: [SideArrays, SideArrays] }
  | { op: 'gram'; side: 0 | 1; start: number; end: number }
  | { op: 'rotate'; ranges: [number, number][]; QT: Float64Array }
  | {
      op: 'solve';
      side: 0 | 1;
      start: number;
      end: number;
      diag0: Float64Array;
      alpha: number;
      cgSteps: number;
    };

let d = 0;
let sides: [SideArrays, SideArrays] | undefined;

parentPort!.on('message', (m: AlsWorkerMessage) => {
  if (m.op === 'init') {
    d = m.d;
    sides = m.sides;
    parentPort!.postMessage(null);
    return;
  }
  const s = sides!;
  if (m.op === 'gram') {
    const G = new Float64Array(d * d);
    gramRange(s[m.side].F, m.start, m.end, d, G);
    parentPort!.postMessage(G, [G.buffer]);
  } else if (m.op === 'rotate') {
    // ranges[0] for side 0 (users), ranges[1] for side 1 (items).
    rotateRange(s[0].F, m.ranges[0][0], m.ranges[0][1], d, m.QT);
    rotateRange(s[1].F, m.ranges[1][0], m.ranges[1][1], d, m.QT);
    parentPort!.postMessage(null);
  } else {
    const X = s[m.side];
    const Y = s[1 - m.side];
    solveRange(X.F, Y.F, m.start, m.end, X.ptr, X.idx, X.wts, d, m.diag0, m.alpha, m.cgSteps);
    parentPort!.postMessage(null);
  }
});
