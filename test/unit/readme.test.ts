/** The README's promises that can drift from the code: the exit-code table, the verb list, the commands. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { EXIT, EXIT_CODE_DESCRIPTIONS } from '../../core/errors.js';
import { VERBS } from '../../core/verbs.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

it('README exit-code table equals core/errors.ts', () => {
  const rows = [...readme.matchAll(/^\| (\d+) \| `([A-Z_]+)` \| (.+) \|$/gm)].map((m) => [Number(m[1]), m[2], m[3]]);
  const expected = Object.entries(EXIT).map(([k, v]) => [v, k, EXIT_CODE_DESCRIPTIONS[k as keyof typeof EXIT_CODE_DESCRIPTIONS]]);
  assert.deepEqual(rows, expected);
});

it('README lists every verb', () => {
  for (const v of VERBS) assert.ok(readme.includes(`\`${v.name}`), `README does not mention ${v.name}`);
});

it('.ci/run runs the README test command', () => {
  const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');
  const command = ci.trim().split('\n').filter((l) => l && !l.startsWith('#') && !l.startsWith('set ') && !l.startsWith('cd ')).pop();
  assert.equal(command, 'npm test');
  assert.ok(readme.includes('```sh\nnpm test\n```'));
});
