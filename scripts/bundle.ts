// node scripts/bundle.ts [OUTDIR]: the CLI as the image runs it, bundled by esbuild into OUTDIR (dist/):
// main.mjs, processor-thread.mjs (the processor threads' entry) and the chunks both share. From source,
// Node resolves, reads and compiles about 600 module files at every start (typebox alone is 250); from
// the bundle, a few files, `backbeat run` is ready in half the time with 40 % of the CPU (figures in
// docs/development.md). Each verb's modules stay in chunks of their own, loaded when the verb runs.
//
// kafkajs and @azure/storage-blob are left to node_modules: the code takes parts of them by require()
// at run time, which a bundled copy would load a second time. No minifying: a stack trace names the
// functions of the source, and each module is marked by its path in the chunk.
import { rmSync, symlinkSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Smithy's HTTP handler, as an ES module, imports Node's http module dynamically on its first request. An
 * ESM import builds the module's ESM facade, which reads its lazy WebSocket getters and so loads undici
 * (about 10 ms of the start; lib/http/node-http.ts says more): it is given the module as CommonJS has it.
 */
const httpForSmithy: Plugin = {
  name: 'node-http-for-smithy',
  setup(b) {
    b.onResolve({ filter: /^(node:)?http$/ }, (args) => (args.kind === 'dynamic-import' && args.importer.includes('/@smithy/node-http-handler/') ? { path: 'node:http', namespace: 'node-http-cjs' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'node-http-cjs' }, () => ({ contents: "const http = process.getBuiltinModule('node:http');\nexport default http;\nexport const { Agent, request } = http;\n", loader: 'js' }));
  },
};

export async function bundle(outdir: string): Promise<void> {
  rmSync(outdir, { recursive: true, force: true });
  await build({
    absWorkingDir: ROOT,
    entryPoints: { main: 'cli/main.ts', 'processor-thread': 'workers/local/processor-thread.ts' },
    bundle: true,
    splitting: true,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    outdir,
    // One folder for entries and chunks: a module's `new URL('./x', import.meta.url)` lands beside it.
    chunkNames: '[name]-[hash]',
    outExtension: { '.js': '.mjs' },
    // Read only by a profile's report (bench/profile.ts), or by Node under --enable-source-maps.
    sourcemap: true,
    external: ['kafkajs', '@azure/storage-blob'],
    // A package's ES module build where it has one (the AWS SDK's, Smithy's), not its CommonJS one: no
    // copy of a CommonJS module's exports per importer, and what is not imported is left out. `backbeat
    // run` then starts with 40 ms less CPU (9 of 10 alternating runs), and a copy of 64 MiB objects took
    // 10 % less (docs/benchmarks.md).
    mainFields: ['module', 'main'],
    plugins: [httpForSmithy],
    // The CommonJS packages bundled in call require() for Node's own modules.
    banner: { js: "import { createRequire as __bundleRequire } from 'node:module';\nconst require = __bundleRequire(import.meta.url);" },
    logLevel: 'warning',
  });
  // Outside the checkout (a test's or a benchmark's folder), the two packages left out are found through a
  // link to its node_modules.
  const where = relative(ROOT, outdir);
  if (where.startsWith('..') || isAbsolute(where)) symlinkSync(join(ROOT, 'node_modules'), join(outdir, 'node_modules'));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await bundle(process.argv[2] ?? `${ROOT}dist`);
