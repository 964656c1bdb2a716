// A one-line progress display on stderr, only when stderr is a terminal (never in pipes or logs).
export class Progress {
  private readonly started = Date.now();
  private last = 0;
  private readonly enabled: boolean;

  constructor(quiet: boolean) {
    this.enabled = !quiet && process.stderr.isTTY === true;
  }

  update(p: { files: number; totalFiles: number; bytes: number; totalBytes: number }): void {
    const now = Date.now();
    if (!this.enabled || (now - this.last < 100 && p.files < p.totalFiles)) return;
    this.last = now;
    const seconds = Math.max((now - this.started) / 1000, 0.001);
    const rate = p.bytes / seconds;
    const eta = rate > 0 ? Math.ceil((p.totalBytes - p.bytes) / rate) : 0;
    const pct = p.totalBytes > 0 ? Math.floor((100 * p.bytes) / p.totalBytes) : 100;
    process.stderr.write(`\r\x1b[K${pct}%  ${p.files}/${p.totalFiles} files  ${mib(p.bytes)}/${mib(p.totalBytes)}  ${mib(rate)}/s  ETA ${eta}s`);
  }

  done(): void {
    if (this.enabled) process.stderr.write('\r\x1b[K');
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
