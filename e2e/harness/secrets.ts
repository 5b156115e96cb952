import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

// Secret values the run hands out (S3 secret keys, API tokens, Kafka passwords): none may appear in any
// log of the run, the workers' and the pods' included. Checked once every component has stopped.

const secrets = new Set<string>();

/** Registers a secret of the run and gives it back. Short values are not checked: they would match by chance. */
export function testSecret<T extends string>(value: T): T {
  if (value.length >= 12) secrets.add(value);
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
    for (const s of secrets) if (text.includes(s)) found.push(`${relative(dir, file)} holds ${s.slice(0, 4)}…`);
  }
  return found;
}
