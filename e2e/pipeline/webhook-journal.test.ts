import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { DeleteObjectCommand, HeadObjectCommand, ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { SNSClient } from '@aws-sdk/client-sns';
import { dump } from 'js-yaml';
import { wireWebhookTopic } from '../../operator/buckets.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { minio, rgw } from '../harness/env.ts';
import { freePort } from '../harness/net.ts';
import { testSecret } from '../harness/secrets.ts';
import { completedIn, manifests, startOn } from './servers.ts';
import { body, locationManifest, versionedBucket, versionsOf } from './sites.ts';

// Ceph RGW cannot publish to Kafka in this build: its bucket notifications go to an HTTP push endpoint,
// the webhook journal's receiver, through a persistent topic. Nothing here scans: what reaches MinIO
// came through the webhook.
describe('the webhook journal: Ceph RGW events over HTTP (real Ceph RGW, MinIO, Kafka)', function () {
  this.timeout(600_000);
  let src: S3Client, dst: S3Client;
  let local: LocalRun;
  let port: number;
  let hook: string;
  // RGW writes the topic's push endpoint, the token in its query, to its own log when a delivery fails.
  const token = testSecret(randomBytes(24).toString('base64url'), /^rgw-[^/]+\/log\/client\.rgw\.log$/);
  const completed = completedIn(() => local);

  before(async () => {
    const [r, m] = await Promise.all([rgw({ name: 'hook-src' }), minio({ name: 'hook-dst' })]);
    [src, dst] = [r.client(), m.client()];
    await versionedBucket(src, 'inbox');
    await versionedBucket(dst, 'inbox-copy');
    const secret = dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'hook-token' }, stringData: { token } });
    const dir = manifests(
      'hook',
      [
        locationManifest('rgw', r.endpoint, r.credentials, { journal: { kafka: { topic: `journal-hook-${randomUUID().slice(0, 8)}` }, webhook: { tokenSecretRef: { name: 'hook-token' } } } }),
        secret,
        locationManifest('minio', m.endpoint, m.credentials),
      ],
      [{ source: { location: 'rgw', bucket: 'inbox' }, destinations: [{ location: 'minio', bucket: 'inbox-copy' }], replicateDeleteMarkers: true }],
    );
    port = await freePort();
    local = await startOn(dir, 'hook', { webhookPort: port });
    assert.ok(local.webhook !== undefined, 'the receiver runs for the webhook Location');
    hook = `${local.webhook.url}/v1/journal/rgw`;
    const sns = new SNSClient({ endpoint: r.endpoint, region: r.region, credentials: r.credentials });
    assert.equal(await wireWebhookTopic(src, sns, 'inbox', 'backbeat-journal-rgw', `${hook}?token=${encodeURIComponent(token)}`), 'added');
    assert.equal(await wireWebhookTopic(src, sns, 'inbox', 'backbeat-journal-rgw', `${hook}?token=${encodeURIComponent(token)}`), 'present', 'wiring again changes nothing');
    sns.destroy();
  });

  after(async () => {
    await local.stop();
  });

  it('refuses a request without the token, or with a malformed event, and writes nothing', async () => {
    const event = JSON.stringify({ Records: [{ eventName: 'ObjectCreated:Put', eventSource: 'ceph:s3', eventTime: new Date().toISOString(), s3: { bucket: { name: 'inbox' }, object: { key: 'forged', versionId: 'v1' } } }] });
    const post = (url: string, body: string, headers: Record<string, string> = {}): Promise<Response> => fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    assert.equal((await post(hook, event)).status, 401);
    assert.equal((await post(`${hook}?token=wrong`, event)).status, 401);
    assert.equal((await post(hook, event, { authorization: 'Bearer wrong' })).status, 401);
    assert.equal((await post(hook.replace(/rgw$/, 'minio'), event, { authorization: `Bearer ${token}` })).status, 401, 'a Location without a webhook takes nothing');
    const bad = await post(hook, '{"Records":[{"eventName":"ObjectCreated:Put"}]}', { authorization: `Bearer ${token}` });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /malformed event/);
    assert.equal((await post(hook, 'x'.repeat(2 * 1024 * 1024), { authorization: `Bearer ${token}` })).status, 413);
    assert.equal(local.webhook?.receiver.received.get('rgw') ?? 0, 0, 'nothing was written to the journal');
    const metrics = await (await fetch(`${local.url}/metrics`)).text();
    const requests = (location: string, code: number): string | undefined => new RegExp(`^backbeat_webhook_requests_total\\{location="${location}",code="${String(code)}"\\} (\\d+)$`, 'm').exec(metrics)?.[1];
    assert.deepEqual([requests('rgw', 401), requests('', 401), requests('rgw', 400), requests('rgw', 413)], ['3', '1', '1', '1'], 'each refusal counted, by the location it was for');
  });

  it('a key with a space and a plus, its metadata, and its delete marker (named by no event)', async () => {
    const put = await src.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'a b+c.txt', Body: 'odd name', ContentType: 'text/plain', Metadata: { from: 'rgw' } }));
    await completed('rgw', 'inbox', 'a b+c.txt', put.VersionId);
    assert.equal((await body(dst, 'inbox-copy', 'a b+c.txt')).toString(), 'odd name');
    assert.equal((await dst.send(new HeadObjectCommand({ Bucket: 'inbox-copy', Key: 'a b+c.txt' }))).Metadata?.['from'], 'rgw');
    const marker = await src.send(new DeleteObjectCommand({ Bucket: 'inbox', Key: 'a b+c.txt' }));
    await completed('rgw', 'inbox', 'a b+c.txt', marker.VersionId);
    const versions = await versionsOf(dst, 'inbox-copy', 'a b+c.txt');
    assert.deepEqual(versions.map((v) => v.deleteMarker), [true, false], JSON.stringify(versions));
  });

  it('500 objects, the receiver stopped while they are written: RGW delivers again what it missed', async () => {
    const receiver = local.webhook?.receiver;
    assert.ok(receiver !== undefined);
    const earlier = receiver.received.get('rgw') ?? 0;
    const keys = Array.from({ length: 500 }, (_, i) => `batch/${String(i).padStart(3, '0')}`);
    const versions = new Map<string, string>();
    let next = 0;
    let stopped: Promise<void> | undefined;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < keys.length; i = next++) {
          const key = keys[i] ?? '';
          // A third of the way in, the receiver goes away (as a pod killed mid-stream).
          if (i === 150) stopped = receiver.close();
          const put = await src.send(new PutObjectCommand({ Bucket: 'inbox', Key: key, Body: `payload ${key}` }));
          versions.set(key, put.VersionId ?? '');
        }
      }),
    );
    await stopped;
    const taken = (receiver.received.get('rgw') ?? 0) - earlier;
    assert.ok(taken < 500, `the receiver was down for part of the stream (${String(taken)} events taken)`);
    console.log(`      the receiver took ${String(taken)} of the 500 events before it stopped`);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await receiver.listen(port, '127.0.0.1');
    for (const key of keys) await completed('rgw', 'inbox', key, versions.get(key));
    const copies = await dst.send(new ListObjectVersionsCommand({ Bucket: 'inbox-copy', Prefix: 'batch/' }));
    assert.equal(copies.Versions?.length, 500, 'one replica per object, none twice');
    for (const key of [keys[0], keys[150], keys[151], keys[499]]) assert.equal((await body(dst, 'inbox-copy', key ?? '')).toString(), `payload ${key ?? ''}`);
    // Nothing scans this Location: every event the receiver missed came again from RGW.
    assert.ok((receiver.received.get('rgw') ?? 0) - earlier >= 500);
  });
});
