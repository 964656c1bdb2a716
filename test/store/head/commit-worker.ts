// A commit in its own process, killed with SIGKILL at a given step: `commit-worker <store> <label> <step> [tag]`.
import { commitHead, type CommitStep } from '../../../src/store/commands/commit.js';
import { Store } from '../../../src/store/store.js';

const [root, label, killAt, tag] = process.argv.slice(2);
const store = await Store.open(root!);
const result = await commitHead(store, {
  label: label!,
  tag,
  onStep: (step: CommitStep, info) => {
    if (step === 'merged') process.stdout.write(`path ${info.path}\n`);
    if (step === killAt) process.kill(process.pid, 'SIGKILL');
  },
});
console.log(result.id);
