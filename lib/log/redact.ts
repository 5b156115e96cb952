// Secrets must never reach a log line, an error message, a status field or an event. Two nets catch them:
// fields whose name says "secret" are masked wherever they appear, and every secret value the process
// has loaded (registered here when read) is masked inside any string, whatever carries it.

export const MASK = '[REDACTED]';

const SECRET_KEY = /secret|password|passwd|token|credential|authorization|private.?key|session.?key|signature/i;
// Short values would mask ordinary words; real credentials are longer.
const MIN_SECRET_LENGTH = 4;

const knownSecrets = new Set<string>();

/** Registers a secret value (e.g. a secret access key read from a Secret) so it is masked everywhere. */
export function registerSecret(value: string | undefined): void {
  if (value !== undefined && value.length >= MIN_SECRET_LENGTH) knownSecrets.add(value);
}

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

export function redactString(text: string): string {
  let out = text;
  for (const secret of knownSecrets) {
    if (out.includes(secret)) out = out.split(secret).join(MASK);
  }
  return out;
}

/** A deep copy of `value` with secret-named fields masked and registered secret values removed from strings. */
export function redact(value: unknown, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: redactString(value.message) };
    if (value.stack !== undefined) out['stack'] = redactString(value.stack);
    for (const [k, v] of Object.entries(value)) out[k] = isSecretKey(k) ? MASK : redact(v, seen);
    return out;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, seen));
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = isSecretKey(k) && v !== undefined ? MASK : redact(v, seen);
  return out;
}
