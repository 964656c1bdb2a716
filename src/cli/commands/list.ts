import { listLabels, listTags } from '../../store/commands/list.js';
import { checkLabel } from '../../store/names.js';
import type { Context } from '../context.js';
import { plural, shortId, size, when } from '../format.js';


export async function list(ctx: Context, label: string | undefined): Promise<void> {
  const store = await ctx.openForReading();
  if (!label) {
    const labels = store ? await listLabels(store) : [];
    ctx.result(labels, () => labels.map((l) => `${l.label}\t${plural(l.tags, 'tag')}`));
    return;
  }
  checkLabel(label);
  const tags = store ? await listTags(store, label) : [];
  ctx.result(tags, () =>
    tags.map((t) =>
      t.id
        ? `${label}:${t.tag}\t${shortId(t.id)}\t${when(t.timestamp)}\t${size(t.bytes ?? 0)}${t.via ? `\t(via ${t.via.join(' -> ')})` : ''}`
        : `${label}:${t.tag}\t!\t${t.problem?.message}`,
    ),
  );
}
