import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { queueNames } from '../../lib/queue/messages.ts';
import { healthServer } from '../../lib/http/health.ts';
import { httpGet } from '../harness/net.ts';
import { backbeat, startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// Fuzzing the control API of a real `backbeat run` (token mode): random methods, paths, headers,
// encodings and bodies, with no credentials, wrong ones, and the right one. Every request is answered
// (no hang, no 5xx), nothing is paused, retried or backfilled, and the process serves on.

const SEED = Number(process.env['BACKBEAT_FUZZ_SEED'] ?? 20261204);
const RUNS = Number(process.env['BACKBEAT_FUZZ_RUNS'] ?? 3000);

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** One request on its own connection; the answer's status, or a failure if none comes within 10 s. */
function send(server: string, r: Sent): Promise<number> {
  const { hostname, port } = new URL(server);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, method: r.method, path: r.path, headers: { ...r.headers, connection: 'close' }, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within 10 s to ${r.method} ${r.path.slice(0, 200)}`)));
    // A body the server refuses before reading it all (413) may reset the connection under us: the answer counts, if it came.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve(-1) : reject(err)));
    req.end(r.body);
  });
}

const segment = fc.oneof(
  fc.constantFrom('v1', 'objects', 'failed', 'retry', 'destinations', 'site-b', 'site-c', 'pause', 'resume', 'rules', 'docs', 'backfill', 'summary', 'metrics', 'healthz', 'readyz', '..', '.', '', '%', '%zz', '%00', '%2e%2e', '%2F', '%C0%AF', '%FF%FE'),
  fc.string({ maxLength: 30 }).map(encodeURIComponent),
);
const path = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.oneof(
      segment.map((l) => `/v1/destinations/${l}/pause`),
      fc.constant('/v1/failed/retry'),
      fc.tuple(segment, segment, segment).map(([l, b, k]) => `/v1/objects/${l}/${b}/${k}`),
      segment.map((r) => `/v1/rules/${r}/backfill`),
      fc.constantFrom('/v1/destinations', '/v1/summary', '/v1/failed', '/healthz', '/readyz', '/metrics'),
    ),
  },
  { weight: 6, arbitrary: fc.array(segment, { minLength: 1, maxLength: 7 }).map((s) => `/${s.join('/')}`) },
  { weight: 2, arbitrary: fc.tuple(fc.array(segment, { maxLength: 4 }), fc.dictionary(fc.constantFrom('limit', 'cursor', 'destination', 'versionId', 'x'), fc.oneof(fc.string({ maxLength: 20 }), fc.integer().map(String)))).map(([s, q]) => `/v1/${s.join('/')}?${new URLSearchParams(q).toString()}`) },
  { weight: 1, arbitrary: fc.constantFrom('/v1/failed?limit=-1', '/v1/failed?cursor=!!!', `/v1/objects/${'a/'.repeat(2_000)}`, `/${'x'.repeat(20_000)}`, '*', '/v1/destinations/site-b/pause/../../../metrics') },
);
const method = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('GET', 'POST') }, { weight: 1, arbitrary: fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'M-SEARCH') });
/** Bodies no endpoint takes: not JSON, not an object, or an object whose fields have the wrong type or value. */
const body = fc.oneof(
  fc.constant(Buffer.alloc(0)).map(() => Buffer.from('null')),
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.jsonValue({ maxDepth: 4 }).filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)).map((v) => Buffer.from(JSON.stringify(v))),
  fc.record({ until: fc.oneof(fc.integer(), fc.constantFrom('yesterday', '2000-01-01T00:00:00Z', '', 'NaN'), fc.array(fc.string())), all: fc.constantFrom('true', 1, null), destination: fc.constantFrom(7, 'nowhere', ''), object: fc.constantFrom('no-slashes', 'site-a/docs', 3) }, { requiredKeys: [] })
    .filter((o) => Object.keys(o).length > 0)
    .map((o) => Buffer.from(JSON.stringify(o))),
  fc.constantFrom(Buffer.alloc(64 * 1024, 'a'), Buffer.alloc(2 * 1024 * 1024, '{'), Buffer.from([0xc0, 0xaf, 0xed, 0xa0, 0x80])),
);
const contentHeaders = fc.record(
  {
    'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-16', 'text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded'),
    'content-encoding': fc.constantFrom('gzip', 'br', 'identity', 'chunked'),
    'x-backbeat-forwarded': fc.constant('1'),
    accept: fc.constantFrom('*/*', 'text/html'),
  },
  { requiredKeys: [] },
);
const credentials = fc.constantFrom<'none' | 'wrong' | 'right' | 'basic'>('none', 'wrong', 'right', 'basic');

describe('control API, fuzzed (real `backbeat run`, token mode; BACKBEAT_FUZZ_SEED and BACKBEAT_FUZZ_RUNS change it)', function () {
  this.timeout(600_000);
  let sites: Sites;
  let run: RunningBackbeat;
  const token = randomBytes(24).toString('hex');
  const prefix = 'apifuzz';
  const names = queueNames(prefix);

  before(async () => {
    sites = await startSites('apifuzz');
    await sourceBucket(sites, 'docs');
    await versionedBucket(sites.b.client(), 'docs-b');
    await versionedBucket(sites.c.client(), 'docs-c');
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }, { location: 'site-c', bucket: 'docs-c' }] });
    run = await startBackbeat(sites, prefix, [], token);
  });

  after(async () => {
    await run.process.stop();
    await sites.stop();
  });

  /** The end offset of every partition of the topics a mutation writes to. */
  const ends = async (): Promise<string> => {
    const admin = await kafkaQueue({ brokers: sites.brokers, clientId: 'apifuzz', logger: createLogger({ component: 'apifuzz', level: 'error' }) }).admin();
    try {
      const all = await Promise.all([names.replication, names.status, names.control].map(async (t) => (await admin.groupLag(`apifuzz-${String(Date.now())}`, t)).map((p) => `${t}#${String(p.partition)}=${p.highWatermark}`)));
      return all.flat().sort().join(' ');
    } finally {
      await admin.close();
    }
  };

  it('keeps the probes and metrics server of the other roles up, whatever it is sent', async () => {
    const server = healthServer({ metrics: () => Promise.resolve({ contentType: 'text/plain', body: 'up 1\n' }), ready: () => true });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
    try {
      let cases = 0;
      await fc.assert(
        fc.asyncProperty(method, path, contentHeaders, body, async (m, p, h, b) => {
          cases++;
          const code = await send(url, { method: m, path: p, headers: h, body: m === 'GET' || m === 'HEAD' ? Buffer.alloc(0) : b });
          assert.ok(code < 500, `${m} ${p.slice(0, 120)} → ${String(code)}`);
        }),
        { seed: SEED, numRuns: Math.ceil(RUNS / 3) },
      );
      console.log(`      health server fuzz: ${String(cases)} requests`);
      assert.equal((await httpGet(`${url}/healthz`)).status, 200);
    } finally {
      server.close();
    }
  });

  it('answers every request with a 2xx only where it may, never a 5xx or nothing, and changes nothing', async () => {
    const before = await ends();
    const codes = new Map<number, number>();
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(method, path, contentHeaders, body, credentials, async (m, p, h, b, drawn) => {
        cases++;
        const route = p.startsWith('/') ? new URL(`http://localhost${p}`).pathname : p;
        // Resume and backfill take any body: with the right token they would act, so they are tried without it.
        const who = drawn === 'right' && /\/(resume|backfill)$/.test(route) ? 'wrong' : drawn;
        const authorization = { none: undefined, wrong: `Bearer ${randomBytes(24).toString('hex')}`, right: `Bearer ${token}`, basic: `Basic ${Buffer.from(`admin:${token}`).toString('base64')}` }[who];
        const sent: Sent = { method: m, path: p, headers: { ...h, ...(authorization !== undefined ? { authorization } : {}) }, body: m === 'GET' || m === 'HEAD' ? Buffer.alloc(0) : b };
        const code = await send(run.server, sent);
        codes.set(code, (codes.get(code) ?? 0) + 1);
        const what = `${m} ${p.slice(0, 120)} (${who}) → ${String(code)}`;
        assert.ok(code < 500, what);
        const api = route.startsWith('/v1/') || route === '/v1';
        if (api && who !== 'right') assert.ok(code === 401 || code === 404 || code === 405 || code === 400 || code === 413 || code === 431 || code === -1, what);
        if (m !== 'GET' && m !== 'HEAD') assert.ok(code < 200 || code >= 300, `${what}: a mutation no endpoint takes was accepted`);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`      control API fuzz: ${String(cases)} requests, seed ${String(SEED)}; answers ${[...codes].sort(([a], [b]) => a - b).map(([c, n]) => `${String(c)}×${String(n)}`).join(', ')}`);

    // Nothing was written (no pause, retry or backfill), and the process serves on.
    assert.equal(await ends(), before);
    assert.deepEqual(JSON.parse((await httpGet(`${run.server}/v1/destinations`, run.headers)).body), { destinations: [{ location: 'site-b', paused: false }, { location: 'site-c', paused: false }] });
    assert.equal((await httpGet(`${run.server}/healthz`)).status, 200);
    assert.equal(await run.cli('pause', 'site-c'), 'site-c: paused\n');
    assert.equal(await run.cli('resume', 'site-c'), 'site-c: resumed\n');
    await assert.rejects(backbeat('pause', 'site-c', '--server', run.server), /401|credentials|token/i);
  });
});
