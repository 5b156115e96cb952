import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

// Secret values the run hands out (S3 secret keys, API tokens, Kafka passwords): none may appear in any
// log of the run, the workers' and the pods' included. Checked once every component has stopped.

/** Each secret, and the log files (relative to the run folder) a server outside the project may write it to. */
const secrets = new Map<string, RegExp | undefined>();

/**
 * Registers a secret of the run and gives it back. Short values are not checked: they would match by
 * chance. `loggedBy`: the log files of a server that is given the secret and writes it there itself
 * (Ceph RGW logs a topic's push endpoint, a webhook token in its query, when a delivery fails); every
 * other log is still checked.
 */
export function testSecret<T extends string>(value: T, loggedBy?: RegExp): T {
  if (value.length >= 12) secrets.set(value, loggedBy);
  return value;
}

function logFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...logFiles(path));
    else if (entry.isFile() && entry.name.endsWith('.log')) out.push(path);
  }
  return out;
}

/** The log files under `dir` that hold a secret of the run, each with the start of the secret it holds. */
export function secretsInLogs(dir: string): string[] {
  if (secrets.size === 0) return [];
  const found: string[] = [];
  for (const file of logFiles(dir)) {
    // Larger logs are read too: a leak is as bad at the end of a long run.
    if (statSync(file).size === 0) continue;
    const text = readFileSync(file, 'utf8');
    const name = relative(dir, file);
    for (const [s, loggedBy] of secrets) if (text.includes(s) && loggedBy?.test(name) !== true) found.push(`${name} holds ${s.slice(0, 4)}…`);
  }
  return found;
}
