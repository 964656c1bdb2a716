// A second process for store tests: `store-worker <store> <command> [args…]`.
//   put-file <path>         put one file, print its digest
//   put-slow <bytes>        stream that many bytes slowly (so a test can kill -9 it mid-put)
//   hold-lock <mode> <ms>   hold the store lock, print "locked", release after ms
//   import <dir> <label>    import a directory, print the id
//   import-many <dir> <n>   import <dir>/0 … <dir>/<n-1> as labels l0 … l<n-1>, print each id
//   gc                      collect garbage, print what was freed as JSON
//   export <ref> <file>     export a bundle
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { exportBundle } from '../../src/store/commands/bundle.js';
import { collectGarbage } from '../../src/store/commands/gc.js';
import { importDirectory } from '../../src/store/commands/import.js';
import { Store } from '../../src/store/store.js';

const [root, command, ...args] = process.argv.slice(2);
const store = await Store.open(root!, { create: true });

if (command === 'put-file') {
  const batch = await store.objects.batch();
  try {
    const { digest } = await batch.putFile(args[0]!);
    await batch.commit();
    console.log(digest);
  } finally {
    await batch.dispose();
  }
} else if (command === 'put-slow') {
  const total = Number(args[0]);
  let sent = 0;
  const stream = new Readable({
    read() {
      if (sent >= total) return this.push(null);
      sent += 65536;
      if (sent === 65536 * 4) console.log('writing');
      setTimeout(() => this.push(Buffer.alloc(65536, 7)), 5);
    },
  });
  const batch = await store.objects.batch();
  await batch.putStream(stream);
  await batch.commit();
  console.log('done');
} else if (command === 'hold-lock') {
  await store.lock.with(args[0] as 'shared' | 'exclusive', async () => {
    console.log('locked');
    await new Promise((r) => setTimeout(r, Number(args[1])));
  });
} else if (command === 'import') {
  console.log((await importDirectory(store, args[0]!, { label: args[1]! })).id);
} else if (command === 'import-many') {
  for (let i = 0; i < Number(args[1]); i++) console.log((await importDirectory(store, `${args[0]}/${i}`, { label: `l${i}` })).id);
} else if (command === 'gc') {
  console.log(JSON.stringify(await collectGarbage(store)));
} else if (command === 'export') {
  const out = createWriteStream(args[1]!);
  await exportBundle(store, args[0]!, out);
  await new Promise((r) => out.end(r));
} else {
  throw new Error(`unknown command ${command}`);
}
