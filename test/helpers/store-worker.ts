// A second process for store tests: `store-worker <store> <command> [args…]`.
//   put-file <path>         put one file, print its digest
//   put-slow <bytes>        stream that many bytes slowly (so a test can kill -9 it mid-put)
//   hold-lock <mode> <ms>   hold the store lock, print "locked", release after ms
import { Readable } from 'node:stream';
import { Store } from '../../src/store/store.js';

const [root, command, ...args] = process.argv.slice(2);
const store = await Store.open(root!, { create: true });

if (command === 'put-file') {
  const batch = await store.objects.batch();
  try {
    const digest = await batch.putFile(args[0]!);
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
} else {
  throw new Error(`unknown command ${command}`);
}
