import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { Queue, QueueProducer } from '../../lib/queue/queue.ts';
import { encode, installationTopics, objectKey, type ObjectRef, queueNames, type QueueNames, type StatusEvent, type TaskDestination } from '../../lib/queue/messages.ts';
import { statusServer } from '../../workers/status/api.ts';
import { tokenAuth } from '../../workers/status/auth.ts';
import { PeerKey } from '../../workers/status/peers.ts';
import { StatusProcessor } from '../../workers/status/status.ts';
import type { FailedEntry } from '../../workers/status/store.ts';
import { sharedKafka } from '../harness/env.ts';
import { freePort, httpGet } from '../harness/net.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';
import { backbeatWithEnv } from './backbeat.ts';

// Several status replicas behind the real HTTP API and CLI: any replica answers for any object (it
// forwards to the owner of the key's partition), and lists, totals and retries span every replica.
// The API takes the token of local mode (tokenAuth); Kubernetes RBAC is tried in e2e/operator.

const quiet = createLogger({ component: 'test', stream: new PassThrough() });
const target = (id: string): TaskDestination => ({ id, location: id.split('/')[0] ?? '', bucket: id.split('/')[1] ?? '', rule: 'r' });

describe('status API over several replicas (real Kafka, real HTTP, the backbeat CLI)', function () {
  this.timeout(240_000);
  let queue: Queue;
  let names: QueueNames;
  let producer: QueueProducer;
  let dir: string;
  const token = testSecret(randomUUID());
  /** The key the replicas trust each other by (the operator makes one per installation). */
  const peerKey = new PeerKey(randomBytes(32));
  const auth = { authorization: `Bearer ${token}` };
  let tokenFile: string;
  /** The CLI with the API token, as users give it. */
  const backbeat = (...args: string[]): Promise<string> => backbeatWithEnv({ ...process.env, BACKBEAT_TOKEN_FILE: tokenFile }, ...args);
  const replicas: { status: StatusProcessor; server: Server; url: string }[] = [];

  before(async () => {
    queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'status-api-test', logger: quiet });
    names = queueNames(`sa-${randomUUID().slice(0, 8)}`);
    const admin = await queue.admin();
    await admin.ensureTopics(installationTopics(names, 6, []));
    await admin.close();
    producer = await queue.producer();
    dir = mkdtempSync(join(tmpdir(), 'status-api-'));
    tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  });
  after(async () => {
    for (const r of replicas.splice(0)) await stopReplica(r);
    await producer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startReplica(name: string): Promise<(typeof replicas)[number]> {
    const port = await freePort();
    const url = `http://127.0.0.1:${String(port)}`;
    const status = new StatusProcessor({ queue, names, logger: quiet, storeFile: join(dir, `${name}.db`), advertiseUrl: url, peerKey });
    await status.start();
    const server = statusServer({
      status,
      auth: tokenAuth(token),
      advertiseUrl: url,
      peerKey,
      destinations: ['b/x', 'c/y'],
      rules: new Map([['r', { source: 'a/src', destinations: ['b/x', 'c/y'] }]]),
      controls: { set: () => Promise.resolve(), states: () => [] },
      backfill: () => undefined,
      ready: () => status.ready(),
      metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }),
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    const r = { status, server, url };
    replicas.push(r);
    return r;
  }
  async function stopReplica(r: (typeof replicas)[number]): Promise<void> {
    r.server.close();
    r.server.closeAllConnections();
    await r.status.close();
  }

  const at = (): string => new Date().toISOString();
  const objects = Array.from({ length: 60 }, (_, i): ObjectRef => ({ location: 'a', bucket: 'src', key: `dir/obj ${String(i)}`, versionId: `v${String(i)}` }));

  it('answers `backbeat status` for keys owned by each replica, pages `failed list` across them, and retries on their owners', async () => {
    const [first, second, third] = [await startReplica('r1'), await startReplica('r2'), await startReplica('r3')];
    const events: StatusEvent[] = objects.flatMap((object, i): StatusEvent[] => [
      { type: 'queued', object, kind: 'object', eventTime: at(), destinations: ['b/x', 'c/y'], targets: ['b/x', 'c/y'].map(target), at: at() },
      { type: 'result', object, kind: 'object', destination: 'b/x', state: 'COMPLETED', attempts: 1, bytes: 5, at: at() },
      i % 2 === 0
        ? { type: 'result', object, kind: 'object', destination: 'c/y', state: 'FAILED', reason: `NoSuchBucket ${String(i)}`, attempts: 1, bytes: 0, at: at() }
        : { type: 'result', object, kind: 'object', destination: 'c/y', state: 'COMPLETED', attempts: 1, bytes: 5, at: at() },
    ]);
    await producer.send(names.status, events.map((e) => ({ key: objectKey(e.object), value: encode(e) })));
    const all = [first, second, third].map((r) => r.status);
    await eventually(() => {
      assert.ok(all.every((s) => s.ready()));
      assert.equal(all.reduce((n, s) => n + s.summary().COMPLETED + s.summary().FAILED, 0), 60);
      assert.ok(all.every((s) => s.peers().length === 2), 'each replica knows the two others');
    }, 90_000, 200);
    const owners = new Set<number>();
    for (const [i, o] of objects.entries()) {
      const partition = await first.status.partitionOf(o.location, o.bucket, o.key);
      owners.add(all.findIndex((s) => s.ownsPartition(partition)));
      // Always asked of the same replica, whoever owns the key.
      const out = await backbeat('status', `a/src/${o.key}`, '--server', first.url);
      assert.match(out, new RegExp(`version v${String(i)}  object  ${i % 2 === 0 ? 'FAILED' : 'COMPLETED'}`));
    }
    assert.deepEqual([...owners].sort(), [0, 1, 2], 'the keys asked are owned by each of the three replicas');

    // Whoever can write to the owners topic cannot redirect forwarded requests: an owner record counts
    // only when signed with the replicas' key, and a forward carries no caller token anyway.
    const heard: IncomingHttpHeaders[] = [];
    const listener = createServer((req, res) => {
      heard.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"versions":[]}');
    });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const listenerUrl = `http://127.0.0.1:${String((listener.address() as AddressInfo).port)}`;
    try {
      const elsewhere = Array.from({ length: 6 }, (_, p) => p).filter((p) => !first.status.ownsPartition(p));
      const forged = (partition: number, sig?: string): { key: string; value: string } => ({ key: `owner/${String(partition)}`, value: encode({ partition, url: listenerUrl, at: at(), ...(sig !== undefined ? { sig } : {}) }) });
      await producer.send(names.statusOwners, elsewhere.flatMap((p) => [forged(p), forged(p, peerKey.signOwner({ partition: p, url: 'http://127.0.0.1:1', at: at() }))]));
      await sleep(3_000);
      for (const o of objects) {
        const answer = await httpGet(`${first.url}/v1/objects/a/src/${encodeURIComponent(o.key)}`, auth);
        assert.equal(answer.status, 200, `${o.key}: ${answer.body}`);
        assert.equal((JSON.parse(answer.body) as { versions: { object: ObjectRef }[] }).versions[0]?.object.versionId, o.versionId);
      }
      assert.equal(heard.length, 0, 'no request reached the forged owner');
      assert.ok(!first.status.peers().includes(listenerUrl));

      // Signed (as only a replica can), the record is followed: the forward carries an assertion for that request alone.
      const [p] = elsewhere;
      assert.ok(p !== undefined);
      const realOwner = all.find((s) => s.ownsPartition(p))?.ownerOf(p);
      const signedAt = at();
      await producer.send(names.statusOwners, [{ key: `owner/${String(p)}`, value: encode({ partition: p, url: listenerUrl, at: signedAt, sig: peerKey.signOwner({ partition: p, url: listenerUrl, at: signedAt }) }) }]);
      let asked: ObjectRef | undefined;
      for (const o of objects) if ((await first.status.partitionOf(o.location, o.bucket, o.key)) === p) asked = o;
      assert.ok(asked !== undefined);
      const path = `/v1/objects/a/src/${encodeURIComponent(asked.key)}`;
      await eventually(async () => {
        assert.equal((await httpGet(`${first.url}${path}`, auth)).status, 200);
        assert.ok(heard.length > 0);
      }, 30_000, 200);
      const forwarded = heard[heard.length - 1];
      assert.ok(forwarded !== undefined);
      assert.equal(forwarded.authorization, undefined, 'the caller token stays with the replica it was given to');
      assert.match(String(forwarded['x-backbeat-peer']), /^\d+\.[\w-]{43}$/);
      const replay = { 'x-backbeat-forwarded': '1', 'x-backbeat-peer': String(forwarded['x-backbeat-peer']) };
      assert.equal((await httpGet(`${second.url}/v1/failed`, replay)).status, 401, 'the assertion is good for that request only');
      // The real owner announces itself again (signed), as it does whenever it takes partitions.
      assert.ok(realOwner !== undefined);
      const back = at();
      await producer.send(names.statusOwners, [{ key: `owner/${String(p)}`, value: encode({ partition: p, url: realOwner, at: back, sig: peerKey.signOwner({ partition: p, url: realOwner, at: back }) }) }]);
      await eventually(() => assert.equal(first.status.ownerOf(p), realOwner), 30_000, 200);
    } finally {
      listener.close();
    }

    // Without the token, or with another, nothing is answered or done, forwarded or not; probes and metrics stay open.
    const objectPath = `/v1/objects/a/src/${encodeURIComponent(objects[0]?.key ?? '')}`;
    for (const headers of [{}, { authorization: `Bearer ${randomUUID()}` }, { authorization: token }, { 'x-backbeat-forwarded': '1' }]) {
      for (const r of [first, second, third]) {
        for (const path of [objectPath, '/v1/failed', '/v1/summary', '/v1/destinations']) assert.equal((await httpGet(`${r.url}${path}`, headers)).status, 401, `GET ${path} ${JSON.stringify(headers)}`);
        for (const [path, body] of [['/v1/failed/retry', { all: true }], ['/v1/destinations/b/pause', {}], ['/v1/rules/r/backfill', {}]] as const) {
          const res = await fetch(`${r.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
          assert.equal(res.status, 401, `POST ${path}`);
          assert.equal(res.headers.get('www-authenticate'), 'Bearer');
        }
        for (const path of ['/healthz', '/readyz', '/metrics']) assert.equal((await httpGet(`${r.url}${path}`)).status, 200, path);
      }
    }
    assert.equal(all.reduce((n, s) => n + s.summary().PENDING, 0), 0, 'no retry was done');
    const refused = await backbeatWithEnv({ ...process.env, BACKBEAT_TOKEN_FILE: '' }, 'failed', 'retry', '--all', '--server', first.url).catch((e: unknown) => e as { code: number; stderr: string });
    assert.equal(typeof refused, 'object', 'the CLI without a token fails');
    assert.match((refused as { stderr: string }).stderr, /needs the API token/);

    // failed list, 7 a page, through the second replica, cursor after cursor.
    const seen: FailedEntry[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const args = ['failed', 'list', '-o', 'json', '--limit', '7', '--server', second.url, ...(cursor !== undefined ? ['--cursor', cursor] : [])];
      const res = await fetch(`${second.url}/v1/failed?limit=7${cursor !== undefined ? `&cursor=${cursor}` : ''}`, { headers: auth });
      const page = (await res.json()) as { failed: FailedEntry[]; next?: string };
      assert.deepEqual(JSON.parse(await backbeat(...args)), page.failed, 'the CLI shows the page the API gives');
      seen.push(...page.failed);
      cursor = page.next;
      pages++;
    } while (cursor !== undefined);
    assert.equal(seen.length, 30);
    assert.equal(new Set(seen.map((e) => e.object.key)).size, 30, 'no entry twice');
    assert.ok(pages >= 5);
    const times = seen.map((e) => e.lastFailureAt ?? '');
    assert.deepEqual(times, [...times].sort(), 'oldest failure first');
    assert.match(await backbeat('failed', 'list', '--limit', '7', '--server', third.url), /7 failed; more: backbeat failed list --cursor \S+ --limit 7/);
    assert.match(await backbeat('failed', 'list', '--limit', 'x', '--server', third.url).catch((e: unknown) => String((e as { stderr?: string }).stderr)), /--limit must be a positive whole number/);

    const summary = (await (await fetch(`${third.url}/v1/summary`, { headers: auth })).json()) as Record<string, number>;
    assert.deepEqual(summary, { PENDING: 0, COMPLETED: 30, FAILED: 30, SKIPPED: 0 });
    // A rule's figures, summed over the three replicas whichever is asked.
    await eventually(async () => assert.deepEqual(await (await fetch(`${second.url}/v1/rules/r`, { headers: auth })).json(), { rule: 'r', source: 'a/src', destinations: [{ destination: 'b/x', replicated: 60, pending: 0, failed: 0 }, { destination: 'c/y', replicated: 30, pending: 0, failed: 30 }], unfolded: 0 }), 30_000, 200);
    assert.equal((await fetch(`${second.url}/v1/rules/nope`, { headers: auth })).status, 404);
    assert.match(await backbeat('failed', 'retry', '--all', '--server', third.url), /re-queued 30 failed destinations/);
    await eventually(() => assert.equal(all.reduce((n, s) => n + s.summary().PENDING, 0), 30), 60_000, 200);

    // Back to one replica: it owns everything, and answers alone.
    for (const r of [second, third]) {
      replicas.splice(replicas.indexOf(r), 1);
      await stopReplica(r);
    }
    await eventually(() => assert.ok(Array.from({ length: 6 }, (_, p) => p).every((p) => first.status.ownsPartition(p))), 90_000, 200);
    assert.match(await backbeat('status', 'a/src/dir/obj 7', '--server', first.url), /version v7 {2}object {2}COMPLETED/);
    assert.deepEqual(first.status.summary(), { PENDING: 30, COMPLETED: 30, FAILED: 0, SKIPPED: 0 });
  });
});
