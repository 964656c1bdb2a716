// Shared bench plumbing: time a run several times, keep the median, print aligned rows.
import { performance } from 'node:perf_hooks';

export async function median(runs: number, fn: () => Promise<void> | void, before?: () => Promise<void> | void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    await before?.();
    const start = performance.now();
    await fn();
    times.push((performance.now() - start) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export function row(name: string, ...cells: string[]): void {
  console.log(`${name.padEnd(34)}${cells.map((c) => c.padStart(16)).join('')}`);
}

export const mbps = (bytes: number, seconds: number): string => `${(bytes / seconds / 1e6).toFixed(0)} MB/s`;
export const perSec = (n: number, seconds: number): string => `${(n / seconds / 1000).toFixed(1)}k/s`;
export const ratio = (x: number): string => `${x.toFixed(2)}×`;

/**
 * Times a baseline and a subject alternately (baseline, subject, baseline, …), running `before`
 * ahead of each, so both see the filesystem in the same state; returns every run's seconds.
 */
export async function compareRuns(runs: number, baseline: () => Promise<void> | void, subject: () => Promise<void> | void, before: () => Promise<void> | void): Promise<{ baseline: number[]; subject: number[] }> {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < runs; i++) {
    a.push(await median(1, baseline, before));
    b.push(await median(1, subject, before));
  }
  return { baseline: a, subject: b };
}

/** The middle value of a list of run times. */
export const medianOf = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

/** compareRuns, reduced to the two medians. */
export async function compare(runs: number, baseline: () => Promise<void> | void, subject: () => Promise<void> | void, before: () => Promise<void> | void): Promise<[number, number]> {
  const r = await compareRuns(runs, baseline, subject, before);
  return [medianOf(r.baseline), medianOf(r.subject)];
}
