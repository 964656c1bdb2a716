// Work over many items with a bounded number in flight: object puts, links, transfers.
//
// Public surface: pool.

/**
 * Runs `work` over `items` with at most `width` in flight. The first failure stops new work, and
 * is thrown only once every started item has settled, so nothing still writes when the caller
 * cleans up.
 */
export async function pool<T>(items: readonly T[], width: number, work: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const runner = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await work(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(width, items.length) }, runner));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}
