// A live commit in its own process with a recording mount, killed with SIGKILL in the mount's
// `layer` (before the switch) or `rebase` (at the commit point): `live-worker <store> <label> <layer|rebase> [tag]`.
import { commitLive } from '../../../src/store/commands/live-commit.js';
import { Store } from '../../../src/store/store.js';

const [root, label, killIn, tag] = process.argv.slice(2);
const store = await Store.open(root!);
await commitLive(store, {
  label: label!,
  tag,
  mount: {
    layer: async () => { if (killIn === 'layer') process.kill(process.pid, 'SIGKILL'); return { sealed: true }; },
    rebase: async () => { if (killIn === 'rebase') process.kill(process.pid, 'SIGKILL'); },
  },
});
