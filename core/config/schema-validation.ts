/**
 * JSON Schema validation with ajv, and the translation of ajv's errors into one line per problem
 * that an operator can act on: the YAML path and what is wrong with it.
 */
import _Ajv2020 from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { JsonSchema } from '../types.js';

// ajv ships CommonJS; under NodeNext the class is on .default.
const Ajv2020 = ((_Ajv2020 as any).default ?? _Ajv2020) as typeof _Ajv2020.default;

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

export function compileSchema(schema: JsonSchema): ValidateFunction {
  return createAjv().compile(schema);
}
