// `make crds`: writes the CRDs generated from lib/config/schema.ts to crds/ and to the Helm chart.
import { mkdirSync, writeFileSync } from 'node:fs';
import { crdFiles } from '../lib/config/crd-files.ts';

const root = new URL('../', import.meta.url).pathname;
for (const dir of ['crds', 'charts/backbeat/crds']) {
  mkdirSync(`${root}${dir}`, { recursive: true });
  for (const [name, text] of crdFiles()) writeFileSync(`${root}${dir}/${name}`, text);
}
process.stdout.write('crds/ and charts/backbeat/crds/ written\n');
