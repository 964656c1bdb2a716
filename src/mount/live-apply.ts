// A write to `/.stratum/apply` on a mounted HEAD, the same for both servers: the request is read
// (`<tag>|<label>:<tag>|<label>@<id> [--discard|--keep]`), the target commit's image is checked
// before anything changes, the store's `applyHead` runs while the mount holds what must not see
// the upper half-changed, and the mount then serves the new base. Each server says only how it
// holds and switches (`LiveApplyMount`): FUSE freezes its requests and swaps its view, kernel
// mode queues control requests and replaces the overlay.
//
// Public surface: applyLive, LiveApplyMount, parseApplyRequest.
import { applyHead, type ApplyResult } from '../store/commands/apply.js';
import { StratumError } from '../store/error.js';
import type { MountState } from '../store/mount-state.js';
import { checkCommitImage } from '../store/mount-target.js';
import { parseRef } from '../store/names.js';
import { resolveRef } from '../store/resolve.js';
import type { Store } from '../store/store.js';
import { log, recordCommit } from './serve.js';

export interface LiveApplyMount {
  /**
   * Runs `apply` while the mount holds what must not see the upper half-changed, then, before
   * letting go, serves the commit it moved HEAD to over `upper` (the same dir: fresh after a
   * discard, kept after a keep). Resolves with apply's result and what the log should add.
   */
  switchAround(apply: () => Promise<ApplyResult>, upper: string): Promise<{ applied: ApplyResult; note?: string }>;
}

/** What a write to `/.stratum/apply` asks: `<tag>|<label>:<tag>|<label>@<id> [--discard|--keep]`. */
export function parseApplyRequest(text: string, label: string): { ref: string; discard: boolean; keep: boolean } {
  const [what, ...flags] = text.split(/\s+/).filter((x) => x !== '');
  if (!what || flags.some((f) => f !== '--discard' && f !== '--keep')) throw new StratumError('USAGE', 'write "<tag> [--discard|--keep]" to apply');
  const ref = what.includes(':') || what.includes('@') ? what : `${label}:${what}`;
  if (!ref.startsWith(`${label}:`) && !ref.startsWith(`${label}@`)) throw new StratumError('USAGE', `this mount serves ${label}; apply ${label}:<tag>`);
  return { ref, discard: flags.includes('--discard'), keep: flags.includes('--keep') };
}

/** Applies `request` to the HEAD this process serves at `mountpoint`; the text `/.stratum/apply` then reads. */
export async function applyLive(o: { store: Store; label: string; request: string; upper: string; mountpoint: string; state: MountState; mount: LiveApplyMount }): Promise<string> {
  const { ref, discard, keep } = parseApplyRequest(o.request, o.label);
  // a damaged target is refused before HEAD moves, not found by the mount after
  await checkCommitImage(o.store, (await resolveRef(o.store, parseRef(ref))).id, ref);
  const { applied: r, note } = await o.mount.switchAround(() => applyHead(o.store, ref, { discard, keep }), o.upper);
  await recordCommit(o.state, o.mountpoint, r.to);
  log(`applied ${ref}: HEAD on ${r.to} (changes ${r.changesWere}${note ? `; ${note}` : ''})`);
  return `${o.label} ${r.to} ${r.changesWere}\n`;
}
