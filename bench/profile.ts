import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';

// `make bench BENCH=--profile`: where backbeat's CPU goes, from the V8 CPU profile of its runs (node
// --cpu-prof), as self time by package, Node module or file of its own. A frame of the bundle is placed
// by the bundle's source maps at the file it came from.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber?: number; columnNumber?: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const ROOT = new URL('..', import.meta.url).pathname;

/** The source maps of bundled files, by path (null where a file has none). */
const maps = new Map<string, SourceMap | null>();

/** The URL of the file a frame's code came from: by its file's source map, if it has one. */
function original(url: string, line = 0, column = 0): string {
  if (!url.startsWith('file://')) return url;
  const path = new URL(url).pathname;
  let map = maps.get(path);
  if (map === undefined) {
    map = existsSync(`${path}.map`) ? new SourceMap(JSON.parse(readFileSync(`${path}.map`, 'utf8')) as SourceMapPayload) : null;
    maps.set(path, map);
  }
  const source = map?.findEntry(line, column);
  return source !== undefined && 'originalSource' in source ? `file://${resolve(dirname(path), source.originalSource)}` : url;
}

/** Where a function belongs: an npm package, a Node module, a file of this project, or V8's own work. */
export function costCentre(frame: ProfileNode['callFrame']): string {
  const { functionName } = frame;
  const url = original(frame.url, frame.lineNumber, frame.columnNumber);
  if (url === '') return functionName.startsWith('(') ? functionName : `(native) ${functionName}`;
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg !== null) return pkg[1] ?? url;
  if (url.startsWith('node:')) return url.replace(/^node:internal\/(streams|http2|fs|url|crypto|util)\/.*$/, 'node:internal/$1/*');
  const path = url.startsWith('file://') ? new URL(url).pathname : url;
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

export interface CostReport {
  /** Sampled time the thread was busy (not idle), in seconds. */
  busySeconds: number;
  /** Self time by cost centre, highest first, in seconds. */
  centres: [string, number][];
}

/** The self time of every cost centre over the `.cpuprofile` files in `dirs` (one per thread or process). */
export function profileCosts(dirs: string[]): CostReport {
  const totals = new Map<string, number>();
  for (const file of dirs.flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(dir, f)))) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const centreOf = new Map(profile.nodes.map((n) => [n.id, costCentre(n.callFrame)]));
    for (const [i, id] of profile.samples.entries()) {
      const centre = centreOf.get(id) ?? '(unknown)';
      totals.set(centre, (totals.get(centre) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1e6);
    }
  }
  totals.delete('(idle)');
  const centres = [...totals].sort(([, a], [, b]) => b - a);
  return { busySeconds: centres.reduce((sum, [, s]) => sum + s, 0), centres };
}

/** The top `n` cost centres, each as a share of the busy time and per object. */
export function formatCosts(report: CostReport, objects: number, n = 8): string[] {
  const ms = (s: number): string => `${((s * 1000) / objects).toFixed(3)} ms/object`;
  return [
    `  busy ${report.busySeconds.toFixed(2)} s (${ms(report.busySeconds)}); top ${String(n)} by self time:`,
    ...report.centres.slice(0, n).map(([centre, s]) => `    ${((100 * s) / report.busySeconds).toFixed(1).padStart(5)} %  ${ms(s)}  ${centre}`),
  ];
}
