// Reading the request counts a FUSE server writes when started with STRATUM_FUSE_COUNTS=<file>
// (native/src/fuse.c rewrites the file within 20 ms of any change: docs/fuse-binding.md).
//   settledCounts(file)  the counts once the file stopped changing (every request so far)
//   countsDiff(a, b)     requests by kind between two snapshots
//   perOp(diff, n)       "x.xx req/file (open 1.00, lookup 1.00 (JS 1.00), ...); into JS y.yy" for n items
import * as fs from 'node:fs';

export interface Counts { requests: Record<string, number>; js: Record<string, number> }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function readCounts(file: string): Counts | undefined {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')) as Counts; } catch { return undefined; }
}

/**
 * The counts once two reads `quietMs` apart agree (the kernel sends releases and forgets after the
 * syscall that caused them returned); undefined when the file never appears within `timeoutMs`.
 */
export async function settledCounts(file: string, quietMs = 150, timeoutMs = 10_000): Promise<Counts | undefined> {
  const end = Date.now() + timeoutMs;
  let last = readCounts(file);
  for (;;) {
    await sleep(quietMs);
    const now = readCounts(file);
    if (now && last && JSON.stringify(now) === JSON.stringify(last)) return now;
    if (Date.now() > end) return now;
    last = now;
  }
}

const minus = (a: Record<string, number>, b: Record<string, number>): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(a)) if (v - (b[k] ?? 0) > 0) out[k] = v - (b[k] ?? 0);
  return out;
};

export function countsDiff(after: Counts, before: Counts | undefined): Counts {
  return { requests: minus(after.requests, before?.requests ?? {}), js: minus(after.js, before?.js ?? {}) };
}

const total = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

/** Requests per item, the kinds that make up most of them, and messages into JS per item. */
export function perOp(d: Counts, items: number, what = 'file'): string {
  const all = total(d.requests);
  // the kinds that make up at least 5% of the requests
  const kinds = Object.entries(d.requests).sort((a, b) => b[1] - a[1]).filter(([, n]) => n >= all * 0.05)
    .map(([k, n]) => `${k} ${(n / items).toFixed(2)}${d.js[k] ? ` (JS ${(d.js[k]! / items).toFixed(2)})` : ''}`);
  return `${(all / items).toFixed(2)} req/${what} (${kinds.join(', ')}); into JS ${(total(d.js) / items).toFixed(2)}`;
}
