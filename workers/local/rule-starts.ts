import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILE = 'rule-starts.json';

/**
 * When each rule took effect in local mode, where manifests carry no creationTimestamp: the first start
 * that saw it, kept in the state folder. A rule that left the manifests and comes back starts again.
 */
export function ruleStarts(stateDir: string, names: Iterable<string>, now = new Date()): Map<string, string> {
  const file = join(stateDir, FILE);
  let known: Record<string, string> = {};
  try {
    known = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file} is unreadable; remove it to start every rule now`, { cause: err });
  }
  const starts = new Map([...names].map((name) => [name, known[name] ?? now.toISOString()]));
  mkdirSync(stateDir, { recursive: true });
  // Written whole, then renamed over: a crash leaves the old file or the new one.
  writeFileSync(`${file}.tmp`, JSON.stringify(Object.fromEntries(starts), null, 2));
  renameSync(`${file}.tmp`, file);
  return starts;
}
