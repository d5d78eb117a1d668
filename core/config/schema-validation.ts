/**
 * JSON Schema validation with ajv, and the translation of ajv's errors into one line per problem
 * that an operator can act on: the YAML path and what is wrong with it.
 *
 * Every walrus process validates its config, and archive_command starts one per WAL segment.
 * Importing ajv and compiling the fleet schema took ~0.3 s of each; so the build
 * (`npm run build`, core/config/precompile-validators.ts) writes the validation code ajv generates
 * for the fleet schema and every built-in plugin's options schema into dist/validators/ (ajv's
 * "standalone" output: the same code ajv runs after compiling), and processes load it instead of
 * ajv. The file name is a hash of the schema, ajv's version and the options, so a changed schema
 * (or a user plugin's) is compiled at run time as before.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type _Ajv2020 from 'ajv/dist/2020.js';
import type { JsonSchema } from '../types.js';

// ajv is CommonJS: required synchronously, and only when a schema has to be compiled.
const require = createRequire(import.meta.url);
type Ajv2020Class = typeof _Ajv2020.default;

const CRON_NICKNAMES = new Set(['@hourly', '@daily', '@midnight', '@weekly', '@monthly', '@yearly', '@annually']);
const CRON_FIELDS: Array<[number, number, string[]?]> = [
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12, ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']],
  [0, 7, ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']],
];

/** A standard 5-field crontab expression (what cron(8) accepts), or a nickname. */
export function isCronExpression(text: string): boolean {
  const trimmed = text.trim();
  if (CRON_NICKNAMES.has(trimmed)) return true;
  const fields = trimmed.split(/\s+/);
  if (fields.length !== 5) return false;
  return fields.every((field, i) => {
    const [min, max, names] = CRON_FIELDS[i];
    const value = (v: string): number | null => {
      const named = names?.indexOf(v.toLowerCase()) ?? -1;
      if (named >= 0) return named + (i === 3 ? 1 : 0);
      if (!/^\d+$/.test(v)) return null;
      const n = Number(v);
      return n >= min && n <= max ? n : null;
    };
    return field.split(',').every((part) => {
      const [range, step] = part.split('/');
      if (step !== undefined && !(/^\d+$/.test(step) && Number(step) > 0)) return false;
      if (range === '*') return true;
      const [lo, hi] = range.split('-');
      const a = value(lo);
      if (a === null) return false;
      if (hi === undefined) return step === undefined || true;
      const b = value(hi);
      return b !== null && a <= b;
    });
  });
}

export function createAjv() {
  const module = require('ajv/dist/2020.js');
  // under NodeNext the class is on .default
  const Ajv2020 = (module.default ?? module) as Ajv2020Class;
  const ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
  ajv.addKeyword({ keyword: 'x-message', schemaType: 'string' });
  ajv.addFormat('cron', { type: 'string', validate: isCronExpression });
  return ajv;
}

export interface SchemaProblem {
  /** Path segments into the document (keys and array indexes). */
  path: Array<string | number>;
  message: string;
}

function pointerToPath(pointer: string): Array<string | number> {
  if (!pointer) return [];
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
  null: 'null',
};

function describeError(e: ErrorObject): SchemaProblem | null {
  const path = pointerToPath(e.instancePath);
  const custom = (e.parentSchema as Record<string, unknown> | undefined)?.['x-message'];
  switch (e.keyword) {
    case 'additionalProperties':
      return { path: [...path, (e.params as any).additionalProperty], message: 'unknown key (check the spelling; see the README config reference)' };
    case 'unevaluatedProperties':
      return { path: [...path, (e.params as any).unevaluatedProperty], message: 'unknown key (check the spelling; see the README config reference)' };
    case 'required':
      return { path, message: `missing required key '${(e.params as any).missingProperty}'` };
    case 'propertyNames':
      return null; // reported by the nested error on the name itself
    case 'type': {
      if (typeof custom === 'string') return { path, message: custom };
      const t = (e.params as any).type as string | string[];
      const names = (Array.isArray(t) ? t : [t]).map((x) => TYPE_NAMES[x] ?? x);
      return { path, message: `must be ${names.join(' or ')}` };
    }
    case 'enum':
      return { path, message: typeof custom === 'string' ? custom : `must be one of: ${(e.params as any).allowedValues.join(', ')}` };
    case 'const':
      return { path, message: typeof custom === 'string' ? custom : `must be ${JSON.stringify((e.params as any).allowedValue)}` };
    case 'minProperties':
      return { path, message: `must have at least ${(e.params as any).limit} entry` };
    default:
      if (typeof custom === 'string') return { path, message: custom };
      return { path, message: e.message ?? 'is invalid' };
  }
}

/** Validate and return problems, one per path (the most specific first found). */
export function schemaProblems(validate: ValidateFunction, data: unknown): SchemaProblem[] {
  if (validate(data)) return [];
  const seen = new Set<string>();
  const problems: SchemaProblem[] = [];
  for (const e of validate.errors ?? []) {
    // propertyNames errors carry the offending name in params; report them on that key
    const p =
      e.keyword === 'pattern' && e.propertyName !== undefined
        ? { path: [...pointerToPath(e.instancePath), e.propertyName], message: `invalid name: ${String((e.parentSchema as any)?.['x-message'] ?? e.message)}` }
        : describeError(e);
    if (!p) continue;
    const id = p.path.join('\u0000');
    if (seen.has(id)) continue;
    seen.add(id);
    problems.push(p);
  }
  return problems;
}

/** Bump when createAjv's options or keywords change: the cached code depends on them. */
const CACHE_GENERATION = 1;
const FORMATS = { cron: { type: 'string', validate: isCronExpression } };

/** dist/validators/ beside the compiled core (from sources there is none: compile at run time). */
export const VALIDATOR_DIRECTORY = fileURLToPath(new URL('../../validators/', import.meta.url));

function cacheKey(schema: JsonSchema): string {
  let ajvVersion = 'unknown';
  try {
    ajvVersion = JSON.parse(readFileSync(require.resolve('ajv/package.json'), 'utf8')).version;
  } catch {
    /* no version: the key still changes with the schema */
  }
  return createHash('sha256')
    .update(JSON.stringify([CACHE_GENERATION, ajvVersion, isCronExpression.toString(), schema]))
    .digest('hex');
}

/** The precompiled validation code, if it is there and only its installer could have written it. */
function loadCached(file: string): ValidateFunction | null {
  let code: string;
  try {
    const info = statSync(file);
    const trustedOwner = info.uid === 0 || info.uid === process.getuid?.();
    if (!trustedOwner || (info.mode & 0o022) !== 0) return null;
    code = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  try {
    const module = { exports: {} as unknown };
    // ajv's standalone code is a CommonJS module that requires only ajv's small runtime helpers
    const runtimeRequire = (id: string) => {
      if (!id.startsWith('ajv/dist/runtime/')) throw new Error(`unexpected require ${id}`);
      return require(id);
    };
    new Function('module', 'exports', 'require', 'formats', code)(module, module.exports, runtimeRequire, FORMATS);
    return typeof module.exports === 'function' ? (module.exports as ValidateFunction) : null;
  } catch {
    return null;
  }
}

/** Compile `schema` and return ajv's standalone code for it, with the file name it is looked up by. */
export function precompiledValidator(schema: JsonSchema): { file: string; code: string } {
  const ajv = createAjv();
  ajv.opts.code.source = true;
  const { _ } = require('ajv');
  ajv.opts.code.formats = _`formats`;
  const validate = ajv.compile(schema);
  const standaloneCode = require('ajv/dist/standalone').default as (ajv: unknown, v: ValidateFunction) => string;
  return { file: `${cacheKey(schema)}.cjs`, code: standaloneCode(ajv, validate) };
}

export function compileSchema(schema: JsonSchema): ValidateFunction {
  return loadCached(join(VALIDATOR_DIRECTORY, `${cacheKey(schema)}.cjs`)) ?? createAjv().compile(schema);
}
