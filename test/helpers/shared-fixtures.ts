/**
 * Where the WAL-E fixtures are: `shared/fixtures` beside the checkout (as CI lays it: a clone
 * with a copy of shared/ next to it), else the workplace's /work/shared/fixtures.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const besideCheckout = fileURLToPath(new URL('../../../shared/fixtures', import.meta.url));

export const SHARED_FIXTURES = existsSync(besideCheckout) ? besideCheckout : '/work/shared/fixtures';
