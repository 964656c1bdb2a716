import { listLabels, listTags } from '../../store/commands/list.js';
import { checkLabel } from '../../store/names.js';
import type { Context } from '../context.js';

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
    tags.map((t) => (t.id ? `${label}:${t.tag}\t${t.id.slice(0, 12)}${t.via ? `\t(via ${t.via.join(' -> ')})` : ''}` : `${label}:${t.tag}\t!\t${t.problem?.message}`)),
  );
}
