// Parses one items.json off the event loop for readItemsJson (items-json.ts) and sends back
// its compact forms; the categories' table is in shared memory, so it is sent, not copied.
import { readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { packItems } from './items-json.js';

const { path } = workerData as { path: string };
try {
  const packed = packItems(readFileSync(path, 'utf8'));
  // The typed arrays move; the strings are copied (one each), the table is shared.
  parentPort!.postMessage({ packed }, [
    packed.ids.ends.buffer as ArrayBuffer,
    packed.titles.ends.buffer as ArrayBuffer,
    packed.creatorOf.buffer as ArrayBuffer,
  ]);
} catch (e) {
  const err = e instanceof Error ? e : new Error(String(e));
  parentPort!.postMessage({ error: { name: err.name, message: err.message } });
}
