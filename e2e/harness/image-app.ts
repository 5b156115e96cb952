import { join } from 'node:path';
import { bundle } from '../../scripts/bundle.ts';
import { runDir } from './run-dir.ts';

// A folder laid out as the image's WORKDIR (/app): the CLI bundled into dist/ as the Dockerfile builds it,
// from this checkout's sources, once per test run. Pods the harness runs as processes (pods.ts) start
// there, so their `node dist/main.mjs` is the image's entry point; the bench runs the same bundle.

let app: Promise<string> | undefined;

/** The folder, built at the first call of the run. */
export function imageApp(): Promise<string> {
  app ??= (async () => {
    const dir = join(runDir(), 'app');
    await bundle(join(dir, 'dist'));
    return dir;
  })();
  return app;
}
