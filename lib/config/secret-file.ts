import { readFileSync } from 'node:fs';

/** A file of a secret value (a token, a password) that cannot be read: says which, never the value. */
export class SecretFileError extends Error {
  override name = 'SecretFileError';
}

/**
 * The value in `file`, without the newline a mounted Secret or `kubectl create token` ends it with.
 * `what` names the file in the error (e.g. "--api-token-file").
 */
export function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new SecretFileError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
