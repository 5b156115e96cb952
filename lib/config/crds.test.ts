import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { crdFiles } from './crd-files.ts';

describe('generated CRDs', () => {
  it('are committed as generated, in crds/ and in the chart (run `make crds` after a schema change)', () => {
    const root = new URL('../../', import.meta.url).pathname;
    for (const [name, text] of crdFiles()) {
      for (const dir of ['crds', 'charts/backbeat/crds']) assert.equal(readFileSync(`${root}${dir}/${name}`, 'utf8'), text, `${dir}/${name} is stale`);
    }
  });
});
