// `annotate <ref> [key=value | key- ...]`: set or remove annotations, then print them all.
// `label:tag` (or `label:<id prefix>`, `label:HEAD`) annotates the commit it names; a bare `label`
// annotates the label. With no changes it only prints.
import { annotationsOf, labelAnnotationsOf, parseAnnotationChanges, setAnnotations, setLabelAnnotations, type Annotations } from '../../store/annotations.js';
import { StratumError } from '../../store/error.js';
import { parseRef } from '../../store/names.js';
import { resolveRef } from '../../store/resolve.js';
import type { Context } from '../context.js';

export async function annotateCommand(ctx: Context, what: string, changes: string[]): Promise<void> {
  const ref = parseRef(what);
  const parsed = parseAnnotationChanges(changes);
  const writing = changes.length > 0;
  const store = writing ? await ctx.openForWriting() : await ctx.openForReading();
  if (!store) throw new StratumError('NOT_FOUND', `no store at ${ctx.storePath}`);
  let annotations: Annotations;
  let target: { label: string; commit?: string };
  if (!what.includes(':') && !what.includes('@')) {
    if (!(await store.tags.labels()).includes(ref.label) && !(await store.heads.read(ref.label))) {
      throw new StratumError('NOT_FOUND', `label ${ref.label} does not exist`);
    }
    target = { label: ref.label };
    annotations = writing ? await setLabelAnnotations(store, ref.label, parsed) : await labelAnnotationsOf(store, ref.label);
  } else {
    const { id } = await resolveRef(store, ref);
    target = { label: ref.label, commit: id };
    annotations = writing ? await setAnnotations(store, id, parsed) : await annotationsOf(store, id);
  }
  ctx.result({ ...target, annotations }, () => Object.entries(annotations).map(([k, v]) => `${k}=${v}`));
}
