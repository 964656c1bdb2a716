import { listLabels, listTags } from '../../store/commands/list.js';
import { checkLabel } from '../../store/names.js';
import type { Context } from '../context.js';

const size = (bytes: number): string => (bytes < 1024 ? `${bytes} B` : bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`);
const when = (iso: string | undefined): string => (iso ? iso.replace('T', ' ').slice(0, 19) : '');

export async function list(ctx: Context, label: string | undefined): Promise<void> {
  const store = await ctx.openForReading();
  if (!label) {
    const labels = store ? await listLabels(store) : [];
    ctx.result(labels, () => labels.map((l) => `${l.label}\t${l.tags} tag${l.tags === 1 ? '' : 's'}`));
    return;
  }
  checkLabel(label);
  const tags = store ? await listTags(store, label) : [];
  ctx.result(tags, () =>
    tags.map((t) =>
      t.id
        ? `${label}:${t.tag}\t${t.id.slice(0, 12)}\t${when(t.timestamp)}\t${size(t.bytes ?? 0)}${t.via ? `\t(via ${t.via.join(' -> ')})` : ''}`
        : `${label}:${t.tag}\t!\t${t.problem?.message}`,
    ),
  );
}
