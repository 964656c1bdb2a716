// Talking to a running mount moved to src/mount/client.ts (both servers' clients); this name
// stays for the callers that import it from here.
//
// Public surface: everything src/mount/client.ts exports.
export * from '../mount/client.js';
