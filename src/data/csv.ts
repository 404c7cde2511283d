// Line-oriented reading of CSV and JSONL files with 1-based line numbers, so every data
// error can name its file and line. Quoted CSV fields may hold commas and doubled quotes
// but not newlines (no loader input needs them; a stray quote is reported, not guessed at).
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { extname } from 'node:path';

/** A data error: the message names file, line and field. */
export class DataError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super(line > 0 ? `${file}:${line}: ${message}` : `${file}: ${message}`);
    this.name = 'DataError';
  }
}

/** Splits one CSV line into fields; throws a plain Error on an unterminated quote. */
export function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  const n = line.length;
  let i = 0;
  for (;;) {
    if (i < n && line.charCodeAt(i) === 34 /* " */) {
      let s = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) throw new Error('unterminated quoted field');
        s += line.slice(i, q);
        if (line.charCodeAt(q + 1) === 34) {
          s += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      out.push(s);
      if (i < n && line.charCodeAt(i) !== 44) throw new Error('text after a closing quote');
    } else {
      const c = line.indexOf(',', i);
      const end = c < 0 ? n : c;
      out.push(line.slice(i, end));
      i = end;
    }
    if (i >= n) break;
    i++; // the comma
    if (i === n) {
      out.push('');
      break;
    }
  }
  return out;
}

export type RecordFormat = 'csv' | 'jsonl';

export function formatOf(path: string): RecordFormat {
  const ext = extname(path).toLowerCase();
  return ext === '.jsonl' || ext === '.ndjson' || ext === '.json' ? 'jsonl' : 'csv';
}

/** A record: CSV row as header→string, or a parsed JSON object. */
export type DataRecord = Record<string, unknown>;

/**
 * Calls `onRecord(record, line)` for each data line (header and blank lines skipped).
 * CSV headers are matched case-insensitively through `aliases` (alias → canonical name).
 */
export async function readRecords(
  path: string,
  onRecord: (rec: DataRecord, line: number) => void,
  aliases: Record<string, string> = {},
): Promise<void> {
  const format = formatOf(path);
  const stream = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  let header: string[] | undefined;
  const canon = (h: string): string => {
    const k = h
      .trim()
      .toLowerCase()
      .replace(/^\ufeff/, '');
    return aliases[k] ?? k;
  };
  try {
    for await (const raw of lines) {
      lineNo++;
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() === '') continue;
      if (format === 'jsonl') {
        let v: unknown;
        try {
          v = JSON.parse(line);
        } catch (e) {
          throw new DataError(path, lineNo, `invalid JSON (${(e as Error).message})`);
        }
        if (v === null || typeof v !== 'object' || Array.isArray(v))
          throw new DataError(path, lineNo, 'expected a JSON object');
        const rec: DataRecord = {};
        for (const [k, val] of Object.entries(v as DataRecord)) rec[canon(k)] = val;
        onRecord(rec, lineNo);
        continue;
      }
      let fields: string[];
      try {
        fields = parseCsvLine(line);
      } catch (e) {
        throw new DataError(path, lineNo, (e as Error).message);
      }
      if (!header) {
        header = fields.map(canon);
        continue;
      }
      if (fields.length !== header.length)
        throw new DataError(
          path,
          lineNo,
          `expected ${header.length} fields (${header.join(',')}), found ${fields.length}`,
        );
      const rec: DataRecord = {};
      for (let i = 0; i < header.length; i++) rec[header[i]] = fields[i];
      onRecord(rec, lineNo);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new DataError(path, 0, 'file not found');
    throw e;
  } finally {
    lines.close();
    stream.destroy();
  }
}
