// Paths from outside: how they are shown in messages. (Bundle import and the control files add
// their safety checks here, so every path from outside passes one module.)
//
// Public surface: display.

/** A path for messages: as text where it is UTF-8, JSON-escaped bytes where it is not. */
export function display(path: Buffer | string): string {
  if (typeof path === 'string') return path;
  const text = path.toString('utf8');
  return Buffer.from(text, 'utf8').equals(path) ? text : JSON.stringify(path.toString('latin1'));
}
