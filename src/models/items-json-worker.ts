// Parses one items.json off the event loop for readItemsJson (items-json.ts) and sends back
// its compact forms; the category and creator tables are in shared memory, so they are sent,
// not copied.
import { readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { packItems } from './items-json.js';

const { path } = workerData as { path: string };
try {
  const packed = packItems(readFileSync(path, 'utf8'));
  // The ends move; the strings are copied (one each); the two tables are shared.
  parentPort!.postMessage({ packed }, [
    packed.ids.ends.buffer as ArrayBuffer,
    packed.titles.ends.buffer as ArrayBuffer,
  ]);
} catch (e) {
  const err = e instanceof Error ? e : new Error(String(e));
  parentPort!.postMessage({ error: { name: err.name, message: err.message } });
}
