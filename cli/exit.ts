// What `backbeat` exits with, for scripts (docs/cli.md lists them).
export const EXIT = {
  ok: 0,
  /** The command ran and failed: a copy or request refused, a server error, versions left failed. */
  failure: 1,
  /** Bad input: an unknown verb or option, a malformed value or manifest. Nothing was changed. */
  usage: 2,
  /** What was asked about does not exist: an object without status, an unknown rule. */
  notFound: 3,
  /** The status API could not be reached. */
  unreachable: 4,
} as const;

/** Input the user must fix: one line, and a pointer to the verb's help. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The status API did not answer at all (refused, timed out, no such host). */
export class Unreachable extends Error {
  override name = 'Unreachable';
}

/** The exit code for an answer of the status API that is not a success. */
export function apiExit(httpStatus: number): number {
  if (httpStatus === 404) return EXIT.notFound;
  if (httpStatus === 400 || httpStatus === 413) return EXIT.usage;
  return EXIT.failure;
}
