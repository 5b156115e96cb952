import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { dump, load } from 'js-yaml';
import type { Location, Secret } from '../../lib/config/schema.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { checkLocation, CREDENTIALS_LABEL } from '../../operator/locations.ts';
import { startLocal, type LocalRun } from '../../workers/local/local.ts';
import { minio } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { serviceHost } from '../harness/net.ts';
import { makePki, type TestPki } from '../harness/pki.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { body, locationManifest } from './sites.ts';

// An S3 endpoint whose certificate a CA made for the run signed: trusted through the Location's
// spec.tls.caBundle alone, by the operator's probe and by the workers that copy to it.

describe('an S3 endpoint behind a private CA (MinIO serving TLS)', function () {
  this.timeout(180_000);
  let pki: TestPki;
  let src: MinioServer, dst: MinioServer;
  let dir: string;
  let local: LocalRun | undefined;

  before(async () => {
    pki = await makePki('s3', [...new Set([serviceHost, '127.0.0.1'])]);
    [src, dst] = [await minio({ name: 'tls-src' }), await minio({ name: 'tls-dst', tls: pki })];
    assert.match(dst.endpoint, /^https:\/\//);
    for (const [server, bucket] of [[src, 'photos'], [dst, 'photos-copy']] as const) {
      await server.client().send(new CreateBucketCommand({ Bucket: bucket }));
      await server.client().send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    dir = join(runDir(), 'manifests-tls');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'locations.yaml'),
      `${locationManifest('src', src.endpoint, src.credentials, { journal: { scan: { intervalSeconds: 10 } } })}---\n${locationManifest('dst', dst.endpoint, dst.credentials, { tls: { caBundle: pki.ca } })}`,
    );
    writeFileSync(join(dir, 'rule.yaml'), dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'photos' }, spec: { source: { location: 'src', bucket: 'photos' }, destinations: [{ location: 'dst', bucket: 'photos-copy' }], replicateExistingObjects: true } }));
  });

  after(async () => {
    await local?.stop();
  });

  it('the operator\'s probe trusts it with the CA bundle, and says why not without', async () => {
    const [secret, location] = locationManifest('dst', dst.endpoint, dst.credentials).split('---\n').map((d) => load(d)) as [Secret, Location];
    const given: Secret = { ...secret, metadata: { ...secret.metadata, labels: { [CREDENTIALS_LABEL]: 'true' } } };
    const at = (tls: Location['spec']['tls']): Location => ({ ...location, spec: { ...location.spec, ...(tls !== undefined ? { tls } : {}) } });
    const trusted = await checkLocation(at({ caBundle: pki.ca }), given);
    trusted.client?.destroy();
    assert.equal(trusted.condition.reason, 'Reachable', trusted.condition.message);
    assert.ok(trusted.buckets?.has('photos-copy'));
    const untrusted = await checkLocation(at(undefined), given);
    assert.equal(untrusted.condition.reason, 'CertificateNotTrusted');
    assert.match(untrusted.condition.message, /presented a certificate that is not trusted .*: give the CA that signed it in spec\.tls\.caBundle/);
    // Another CA than the one that signed it is no better.
    const other = await makePki('s3-other', ['127.0.0.1']);
    assert.equal((await checkLocation(at({ caBundle: other.ca }), given)).condition.reason, 'CertificateNotTrusted');
  });

  it('replicates to it, objects there before the start and written after', async () => {
    await src.client().send(new PutObjectCommand({ Bucket: 'photos', Key: 'before', Body: 'there first' }));
    const logger = createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), 'tls.log')) });
    local = await startLocal({ files: [dir], logger, stateDir: join(runDir(), 'state-tls') });
    const copy = dst.client();
    await eventually(async () => assert.equal((await body(copy, 'photos-copy', 'before')).toString(), 'there first'), 60_000, 500);
    // And one large enough to be streamed a megabyte at a time, each read freed once TLS took it.
    const large = randomBytes(3 * 1024 * 1024 + 17);
    await src.client().send(new PutObjectCommand({ Bucket: 'photos', Key: 'after', Body: 'written later' }));
    await src.client().send(new PutObjectCommand({ Bucket: 'photos', Key: 'large', Body: large }));
    await eventually(async () => assert.equal((await body(copy, 'photos-copy', 'after')).toString(), 'written later'), 60_000, 500);
    await eventually(async () => assert.ok((await body(copy, 'photos-copy', 'large')).equals(large), 'the large replica is byte-exact'), 60_000, 500);
    assert.equal(local.status.lookup('src', 'photos', 'after')[0]?.state, 'COMPLETED');
  });
});
