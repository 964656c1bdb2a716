// `list`: labels with their commit and tag counts, or a label's commits as `podman images` shows
// images: tags, short id, created, size, and which one HEAD is on.
import { listCommits, listLabels } from '../../store/commands/list.js';
import { StratumError } from '../../store/error.js';
import { checkLabel } from '../../store/names.js';
import type { Context } from '../context.js';
import { plural, shortId, size, table, when } from '../format.js';

export async function list(ctx: Context, label: string | undefined, options: { all?: boolean }): Promise<void> {
  const store = await ctx.openForReading();
  if (!label) {
    const labels = store ? await listLabels(store) : [];
    ctx.result(labels, () => labels.map((l) => `${l.label}\t${plural(l.commits, 'commit')}, ${plural(l.tags, 'tag')}`));
    return;
  }
  checkLabel(label);
  if (!store) throw new StratumError('NOT_FOUND', `label ${label} does not exist (there is no store at ${ctx.storePath} yet)`);
  const { commits, broken } = await listCommits(store, label, { all: options.all ?? false });
  ctx.result({ label, commits, broken }, () => [
    ...table([
      ['TAGS', 'ID', 'CREATED', 'SIZE', 'HEAD'],
      ...commits.map((c) => [c.tags.length ? c.tags.map((t) => `${label}:${t}`).join(', ') : `${label}:<none>`, shortId(c.id), when(c.timestamp), size(c.bytes), c.head ? '*' : '']),
    ]),
    ...broken.map((t) => `${label}:${t.tag}  ! ${t.problem?.message ?? 'does not resolve'}`),
  ]);
}
