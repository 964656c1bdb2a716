// Where a label's HEAD lives on disk, besides head.toml (store/head.ts): the upper and work dirs
// of its overlay, the next upper while a swap is prepared, and the journals of a commit or apply
// under way. docs/head.md.
//
// Public surface: HeadPaths, headPaths.
import { join } from 'node:path';
import type { Store } from '../store.js';

export interface HeadPaths {
  labelDir: string;
  upper: string;
  work: string;
  /** The next upper while a swap is prepared; the retired upper after it. */
  swap: string;
  journal: string;
  /** The journal of a live commit in kernel mode (live-commit.ts) while its upper is split in two. */
  live: string;
}

export function headPaths(store: Store, label: string): HeadPaths {
  const labelDir = store.tags.labelDir(label);
  return { labelDir, upper: join(labelDir, 'head'), work: join(labelDir, 'work'), swap: join(labelDir, 'head.swap'), journal: join(labelDir, 'head.journal'), live: join(labelDir, 'head.live') };
}
