#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) in its own process, so a test that
// hangs or crashes cannot take the others with it, then prints one summary line.
// Usage: node scripts/test.js [substring ...]   (only files whose path below dist/test contains a substring)
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');
const filters = process.argv.slice(2);
const perFileTimeoutMs = Number(process.env.STRATUM_TEST_TIMEOUT_MS ?? 300_000);
// tests never read or write the machine's real mount state
const runtime = mkdtempSync(join(tmpdir(), 'stratum-test-run-'));
process.env.STRATUM_STATE = join(runtime, 'state');
process.on('exit', () => rmSync(runtime, { recursive: true, force: true }));

function listTests(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listTests(path));
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

function runFile(file) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    let output = '';
    child.stdout.on('data', (d) => { output += d; process.stdout.write(d); });
    child.stderr.on('data', (d) => { output += d; process.stderr.write(d); });
    const timer = setTimeout(() => { output += '\n[timed out]\n'; child.kill('SIGKILL'); }, perFileTimeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const num = (label) => Number((output.match(new RegExp(`${label}:\\s+(\\d+)`)) ?? [])[1] ?? 0);
      resolve({ code: code ?? 1, signal, total: num('Total'), passed: num('Passed'), skipped: num('Skipped'), output });
    });
  });
}

// Filters match the path below dist/test (not the checkout's own path, which may contain any
// word), and a compiled file whose source is gone (a test removed since the last clean build) is
// not run.
const files = listTests(testDir).filter((f) => {
  const rel = relative(testDir, f);
  return existsSync(join(root, 'test', rel.replace(/\.js$/, '.ts'))) && (filters.length === 0 || filters.some((s) => rel.includes(s)));
});
let passed = 0, failed = 0, skipped = 0;
const broken = [];
const started = Date.now();
for (const file of files) {
  const name = relative(testDir, file);
  console.log(`\n# ${name}`);
  const r = await runFile(file);
  passed += r.passed;
  skipped += r.skipped;
  const fileFailed = r.total - r.passed - r.skipped;
  failed += fileFailed;
  if (r.code !== 0 || r.total === 0) {
    broken.push(`${name} (exit ${r.signal ?? r.code}${r.total === 0 ? ', no test ran' : ''})`);
    if (fileFailed === 0) failed += 1;
  }
}
console.log(`\n${files.length} test files in ${((Date.now() - started) / 1000).toFixed(1)} s`);
if (broken.length) console.log(`failing files:\n  ${broken.join('\n  ')}`);
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
