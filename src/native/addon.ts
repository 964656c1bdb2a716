// Loads the compiled addon once; the typed wrappers next to this file are the only users.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// dist/src/native/addon.js -> <repo>/native/build/Release
export const addon: Record<string, unknown> = require('../../../native/build/Release/stratum_native.node');
