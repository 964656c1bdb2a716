// A commit exported as one bundle in memory, for tests that read or tamper with its bytes.
import { PassThrough } from 'node:stream';
import { exportBundle } from '../../src/store/commands/bundle.js';
import type { Store } from '../../src/store/store.js';

export async function bundleOf(store: Store, ref: string): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  await exportBundle(store, ref, out);
  out.end();
  return Buffer.concat(chunks);
}
