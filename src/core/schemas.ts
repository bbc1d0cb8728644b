import { Type, type TStringOptions } from 'typebox';
import { Format } from 'typebox/format';
import ajvFormats from 'ajv-formats';

// One `email` rule for both validators: TypeBox (job payloads, import rows) checks the format as Fastify's Ajv does
// (ajv-formats, full mode, which @fastify/ajv-compiler adds), so a row and a request accept the same addresses.
// ajv-formats is CommonJS: its default export sits one level down under nodenext.
const ajvEmail = ajvFormats.default.get('email', 'full') as RegExp;
Format.Set('email', (value) => ajvEmail.test(value));

// The one control-character rule: C0 controls but tab, DEL and the C1 controls. A NUL would reach PostgreSQL
// (error 22021, a 500), the rest have no business in an address, an id or a name. Ajv and TypeBox both compile
// patterns with the `u` flag.
const CONTROL_CHARACTERS = '\\x00-\\x08\\x0A-\\x1F\\x7F-\\x9F';
const NO_CONTROL_CHARACTERS = `^[^${CONTROL_CHARACTERS}]*$`;
// Single-line text (a name pasted into email bodies and subjects): also no Unicode line or paragraph separators.
const SINGLE_LINE = `^[^${CONTROL_CHARACTERS}\\u2028\\u2029]*$`;

/** The same rule for a value checked outside a schema (a CSV field): true when `value` holds a control character. */
const CONTROL_CHARACTER = new RegExp(`[${CONTROL_CHARACTERS}]`, 'u');
export function hasControlCharacter(value: string): boolean {
  return CONTROL_CHARACTER.test(value);
}

/** The patterns SafeString uses, so the error formatter can say what is wrong in words. */
export const SAFE_STRING_PATTERNS: ReadonlySet<string> = new Set([NO_CONTROL_CHARACTERS, SINGLE_LINE]);

/**
 * A string that holds no control character (tab aside); `singleLine` also
 * refuses Unicode line separators. Use it for every string a client sends.
 * Not combinable with another `pattern`: check that one in the handler or via `format`.
 */
export function SafeString(options: Omit<TStringOptions, 'pattern'> & { singleLine?: boolean } = {}) {
  const { singleLine, ...rest } = options;
  return Type.String({ ...rest, pattern: singleLine ? SINGLE_LINE : NO_CONTROL_CHARACTERS });
}

/** The words for a SafeString failure (Ajv would print the pattern). */
export function describeSafeStringFailure(pattern: unknown): string | undefined {
  if (typeof pattern !== 'string' || !SAFE_STRING_PATTERNS.has(pattern)) return undefined;
  return pattern === SINGLE_LINE ? 'must not contain control characters or line breaks' : 'must not contain control characters';
}

export interface SchemaError {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** What is wrong, in words: the validator's message, except SafeString failures, which say what is wrong. */
function describeProblem(error: SchemaError | undefined): string {
  const safe = error?.keyword === 'pattern' ? describeSafeStringFailure(error.params?.pattern) : undefined;
  return safe ?? error?.message ?? 'is invalid';
}

/**
 * The one wording of a validation error (Ajv's or TypeBox's): `<where> <what is wrong>`, for the first error only.
 * `where` is the instance path (`/email`), passed through `path` when given (`email`, `--email`), or `root` when the
 * value itself is wrong.
 */
export function firstValidationError(
  errors: Iterable<SchemaError>,
  options: { root?: string; path?: (instancePath: string) => string } = {},
): string {
  let first: SchemaError | undefined;
  for (const error of errors) {
    first = error;
    break;
  }
  const instancePath = first?.instancePath ?? '';
  const where = (options.path ? options.path(instancePath) : instancePath) || (options.root ?? 'body');
  return `${where} ${describeProblem(first)}`;
}

/** Fastify's `schemaErrorFormatter`: Fastify's own wording, except SafeString failures, which say what is wrong. */
export function schemaErrorFormatter(errors: SchemaError[], dataVar: string): Error {
  const text = errors.map((error) => `${dataVar}${error.instancePath ?? ''} ${describeProblem(error)}`).join(', ');
  return new Error(text);
}
