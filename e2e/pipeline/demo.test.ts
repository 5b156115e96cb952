import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { demo } from '../../scripts/demo.ts';

// `make demo` as a newcomer runs it (the script's own function) on real Kafka and MinIO: every version
// it writes reaches site B, and its table says so.

describe('make demo', function () {
  this.timeout(180_000);

  it('replicates a multipart object, a tagged one and a delete marker, and shows each COMPLETED with the replica\'s etag', async () => {
    const lines: string[] = [];
    const rows = await demo((line = '') => lines.push(line), `demo-${randomUUID().slice(0, 8)}`);
    assert.deepEqual(
      rows.map((r) => [r.key, r.change, r.state]),
      [
        ['big/multipart.bin', 'object', 'COMPLETED'],
        ['tagged.txt', 'object', 'COMPLETED'],
        ['gone.txt', 'object', 'COMPLETED'],
        ['gone.txt', 'delete marker', 'COMPLETED'],
      ],
    );
    for (const r of rows.filter((x) => x.change === 'object')) assert.equal(r.replicaEtag, r.sourceEtag, r.key);
    assert.match(rows[0]?.sourceEtag ?? '', /-3$/, 'the multipart object keeps its three parts');
    const table = lines.slice(lines.indexOf('\nsite A → site B'));
    for (const r of rows) assert.ok(table.some((l) => l.includes(r.versionId) && l.includes(r.state)), `${r.key} ${r.versionId} in the table:\n${lines.join('\n')}`);
  });
});
