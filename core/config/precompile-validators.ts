/**
 * Build step (`npm run build`): write ajv's standalone validation code for the fleet schema, the
 * backup sentinel's schema and every built-in plugin's options schema into dist/validators/, so
 * that walrus processes validate without importing or running ajv's compiler (see schema-validation.ts).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILT_IN_PLUGINS, loadManifest } from '../registry.js';
import { VALIDATOR_DIRECTORY, precompiledValidator } from './schema-validation.js';
import type { JsonSchema } from '../types.js';

/** schemas/<name> from the sources (tsx) or from dist/core/config (compiled). */
function schemaFile(name: string): string {
  const found = [new URL(`../../schemas/${name}`, import.meta.url), new URL(`../../../schemas/${name}`, import.meta.url)]
    .map((u) => fileURLToPath(u))
    .find((p) => {
      try {
        readFileSync(p);
        return true;
      } catch {
        return false;
      }
    });
  if (!found) throw new Error(`schemas/${name} not found`);
  return found;
}
const schemaOf = (name: string): JsonSchema => JSON.parse(readFileSync(schemaFile(name), 'utf8'));

// the sentinel's schema too: backup-fetch, backup-list and verify read sentinels
const schemas: Array<[string, JsonSchema]> = [
  ['fleet', schemaOf('fleet.schema.json')],
  ['backup sentinel', schemaOf('backup-sentinel.schema.json')],
];
for (const name of BUILT_IN_PLUGINS) schemas.push([`plugin ${name}`, (await loadManifest(name, process.cwd())).optionsSchema]);

mkdirSync(VALIDATOR_DIRECTORY, { recursive: true, mode: 0o755 });
for (const [what, schema] of schemas) {
  const { file, code } = precompiledValidator(schema);
  writeFileSync(join(VALIDATOR_DIRECTORY, file), code, { mode: 0o644 });
  process.stdout.write(`precompiled ${what} → ${file}\n`);
}
