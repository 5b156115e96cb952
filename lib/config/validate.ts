import { Kind, type TSchema } from '@sinclair/typebox';
import { Value, type ValueError } from '@sinclair/typebox/value';
import { RESOURCE_SCHEMAS } from './schema.ts';

/** One thing wrong with the input, located as precisely as we can: file, resource, field. */
export interface Problem {
  file?: string;
  /** `Kind/name`, once known. */
  resource?: string;
  /** Dotted field path, e.g. `spec.destinations[1].bucket`; empty for the whole document. */
  path: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  return [p.file, p.resource, p.path].filter((s) => s !== undefined && s !== '').join(': ') + `: ${p.message}`;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: Problem[];
  constructor(problems: Problem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.problems = problems;
  }
}

/** `/spec/destinations/0/bucket` → `spec.destinations[0].bucket` */
export function fieldPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, seg) => (/^\d+$/.test(seg) ? `${acc}[${seg}]` : acc === '' ? seg : `${acc}.${seg}`), '');
}

function literalChoices(schema: TSchema): string[] | undefined {
  const anyOf = (schema as { anyOf?: TSchema[] }).anyOf;
  if (anyOf === undefined) return undefined;
  const consts = anyOf.map((s) => (s as { const?: unknown }).const);
  return consts.every((c) => typeof c === 'string') ? consts : undefined;
}

function describe(error: ValueError): string {
  const schema = error.schema as TSchema & { pattern?: string; const?: unknown };
  const choices = literalChoices(schema);
  if (choices !== undefined) return `must be one of ${choices.map((c) => `"${c}"`).join(', ')}`;
  if (schema[Kind] === 'Literal') return `must be ${JSON.stringify(schema.const)}`;
  if (error.value === undefined) return 'is required';
  if (schema.pattern !== undefined && typeof error.value === 'string') {
    return `${JSON.stringify(error.value)} does not match ${schema.pattern}`;
  }
  if (error.message === 'Unexpected property') return 'is not a known field';
  // `tags: {env: prod}` where a list of {key, value} is meant: say how it is written.
  if ((schema as { type?: string }).type === 'array' && typeof error.value === 'object' && error.value !== null && !Array.isArray(error.value)) {
    const keys = Object.keys((schema as { items?: { properties?: Record<string, unknown> } }).items?.properties ?? {});
    return `must be a list, not a map${keys.length > 0 ? `: each item is {${keys.join(', ')}}` : ''}`;
  }
  return plain(error.message);
}

const article = (word: string): string => (/^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`);

/** TypeBox's messages, in plain words: "Expected integer to be greater or equal to 1" → "must be at least 1". */
function plain(message: string): string {
  const bound = (dir: string): string => (dir === 'greater' ? 'least' : 'most');
  let m = /^Expected (?:integer|number) to be (greater|less) or equal to (-?[\d.]+)$/.exec(message);
  if (m) return `must be at ${bound(m[1] ?? '')} ${m[2] ?? ''}`;
  m = /^Expected string length (?:to be )?(greater|less) or equal to (\d+)$/.exec(message);
  if (m) return `must be at ${bound(m[1] ?? '')} ${m[2] ?? ''} characters long`;
  m = /^Expected array length (?:to be )?(greater|less) or equal to (\d+)$/.exec(message);
  if (m) return `must have at ${bound(m[1] ?? '')} ${m[2] ?? ''} item${m[2] === '1' ? '' : 's'}`;
  m = /^Expected (\w+)$/.exec(message);
  if (m) return `must be ${article(m[1] ?? '')}`;
  return message.replace(/^Expected/, 'must be');
}

/**
 * The document without the fields of `schema` set to null, as the API server prunes them from custom
 * resources: `filter:` left empty in YAML means no filter in local mode too. An unknown field stays,
 * null or not (the API server refuses it first), and so do nulls in lists.
 */
function withoutNulls(schema: TSchema, v: unknown): unknown {
  const { items, properties = {} } = schema as { items?: TSchema; properties?: Record<string, TSchema> };
  if (Array.isArray(v)) return items === undefined ? v : v.map((x) => withoutNulls(items, x));
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(
    Object.entries(v)
      .filter(([k, x]) => !(x === null && k in properties))
      .map(([k, x]) => [k, properties[k] === undefined ? x : withoutNulls(properties[k], x)]),
  );
}

/**
 * Checks one document against its resource schema, after filling defaults. Returns the defaulted copy,
 * or the problems (one per field; the first error of a field is the useful one).
 */
export function checkResource(doc: unknown, where: Omit<Problem, 'path' | 'message'>): { value: unknown; problems: Problem[] } {
  const kind = (doc as { kind?: unknown } | null)?.kind;
  if (typeof kind !== 'string' || !(kind in RESOURCE_SCHEMAS)) {
    return { value: doc, problems: [{ ...where, path: 'kind', message: `must be one of ${Object.keys(RESOURCE_SCHEMAS).join(', ')} (got ${JSON.stringify(kind)})` }] };
  }
  const schema = RESOURCE_SCHEMAS[kind] as TSchema;
  const value = Value.Default(schema, withoutNulls(schema, structuredClone(doc)));
  const seen = new Set<string>();
  const problems: Problem[] = [];
  for (const error of Value.Errors(schema, value)) {
    // A union reports once for itself and once per branch: keep the first report of each field.
    const path = fieldPath(error.path);
    if ([...seen].some((p) => path.startsWith(`${p}.`) || path.startsWith(`${p}[`)) || seen.has(path)) continue;
    seen.add(path);
    problems.push({ ...where, path, message: describe(error) });
  }
  return { value, problems };
}
