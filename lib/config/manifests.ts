import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { loadAll, YAMLException } from 'js-yaml';
import type { Location, ReplicationRule, Secret } from './schema.ts';
import { checkSemantics } from './semantics.ts';
import { checkResource, ConfigError, type Problem } from './validate.ts';

/** Every resource of a configuration, by name, validated together. */
export interface Manifests {
  locations: Map<string, Location>;
  rules: Map<string, ReplicationRule>;
  secrets: Map<string, Secret>;
}

export interface Document {
  file: string;
  doc: unknown;
}

/** YAML files named directly, and the .yaml/.yml files of named directories (sorted, not recursive). */
export function manifestFiles(paths: string[]): string[] {
  return paths.flatMap((p) => {
    if (!statSync(p, { throwIfNoEntry: false })?.isDirectory()) return [p];
    return readdirSync(p)
      .filter((f) => ['.yaml', '.yml'].includes(extname(f)))
      .sort()
      .map((f) => join(p, f));
  });
}

export function readDocuments(files: string[]): { documents: Document[]; problems: Problem[] } {
  const documents: Document[] = [];
  const problems: Problem[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      problems.push({ file, path: '', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
      continue;
    }
    try {
      for (const doc of loadAll(text)) if (doc !== null && doc !== undefined) documents.push({ file, doc });
    } catch (err) {
      const e = err as YAMLException;
      const at = e.mark === undefined ? '' : ` at line ${e.mark.line + 1}, column ${e.mark.column + 1}`;
      problems.push({ file, path: '', message: `invalid YAML${at}: ${e.reason}` });
    }
  }
  return { documents, problems };
}

/** Validates documents one by one, then together; throws ConfigError listing every problem. */
export function parseManifests(documents: Document[], earlier: Problem[] = []): Manifests {
  const problems = [...earlier];
  const out: Manifests = { locations: new Map(), rules: new Map(), secrets: new Map() };
  const origin = new Map<string, string>();
  for (const { file, doc } of documents) {
    const d = doc as { kind?: unknown; metadata?: { name?: unknown } } | null;
    const name = typeof d?.metadata?.name === 'string' ? d.metadata.name : undefined;
    const resource = typeof d?.kind === 'string' && name !== undefined ? `${d.kind}/${name}` : undefined;
    const where = { file, ...(resource !== undefined ? { resource } : {}) };
    const { value, problems: found } = checkResource(doc, where);
    problems.push(...found);
    if (found.length > 0 || resource === undefined || name === undefined) continue;
    const previous = origin.get(resource);
    if (previous !== undefined) {
      problems.push({ ...where, path: 'metadata.name', message: `defined twice (also in ${previous})` });
      continue;
    }
    origin.set(resource, file);
    const kind = (value as { kind: string }).kind;
    if (kind === 'Location') out.locations.set(name, value as Location);
    else if (kind === 'ReplicationRule') out.rules.set(name, value as ReplicationRule);
    else out.secrets.set(name, value as Secret);
  }
  problems.push(...checkSemantics(out, (resource) => origin.get(resource)));
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

export function loadManifests(paths: string[]): Manifests {
  const { documents, problems } = readDocuments(manifestFiles(paths));
  return parseManifests(documents, problems);
}
