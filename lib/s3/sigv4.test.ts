import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { SigV4, type SignInput } from './sigv4.ts';

// The direct path's signer against the SDK's, on the requests it signs: both must give the same
// Authorization for the same request and time. (That servers accept it is shown on MinIO, RGW and
// SeaweedFS by the component and S3-servers suites.)

type Data = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: Data): Uint8Array | string => (typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
class Sha256 {
  private readonly hash;
  constructor(secret?: Data) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: Data): void {
    this.hash.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.hash.digest());
  }
}

const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const at = new Date('2026-12-06T03:04:05.678Z');

async function sdkHeaders(input: SignInput, creds: typeof credentials & { sessionToken?: string }, region: string): Promise<Record<string, string>> {
  const signer = new SignatureV4({ credentials: creds, region, service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: true });
  const signed = await signer.sign({ method: input.method, protocol: 'http:', hostname: '127.0.0.1', port: 9000, path: input.path, query: input.query, headers: input.headers }, { signingDate: at });
  return signed.headers;
}

const cases: [string, SignInput][] = [
  ['a GET of a version', { method: 'GET', path: '/photos/cat%20pics/a%2Bb.jpg', query: { versionId: 'v1~x/y=' }, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } }],
  [
    'a PUT with metadata, content headers and tags',
    {
      method: 'PUT',
      path: '/docs/%E2%9C%93/%21%27%28%29%2A',
      query: {},
      headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': '16384', 'x-amz-meta-Owner': '  two  spaces ', 'cache-control': 'no-cache', 'content-type': 'text/plain; charset=utf-8', 'x-amz-tagging': 'a=1&b=%20' },
    },
  ],
  ['a page of versions', { method: 'GET', path: '/docs', query: { versions: '', 'key-marker': 'a&b<c>"d\'e', 'version-id-marker': 'null', 'max-keys': '1000', prefix: 'é/ ' }, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } }],
  ['an upload of a part', { method: 'PUT', path: '/big/video.bin', query: { partNumber: '3', uploadId: 'abc-123' }, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': '8388608' } }],
];

describe('SigV4 of the direct path (against the SDK signer)', () => {
  for (const [name, input] of cases) {
    it(`signs ${name} as the SDK does`, async () => {
      const ours = new SigV4(credentials, 'us-east-1').sign(input, at);
      const theirs = await sdkHeaders(input, credentials, 'us-east-1');
      assert.equal(ours['authorization'], theirs['authorization']);
      assert.equal(ours['x-amz-date'], theirs['x-amz-date']);
    });
  }

  it('signs a session token, in another region, and keeps a day\'s key only for that day', async () => {
    const withToken = { ...credentials, sessionToken: 'FwoGZXIvYXdzE/token+with=chars' };
    const signer = new SigV4(withToken, 'eu-west-3');
    const [, input] = cases[0] ?? assert.fail();
    for (const when of [at, new Date('2026-12-07T00:00:01Z')]) {
      const ours = signer.sign(input, when);
      const sdk = new SignatureV4({ credentials: withToken, region: 'eu-west-3', service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: true });
      const theirs = (await sdk.sign({ method: input.method, protocol: 'http:', hostname: '127.0.0.1', path: input.path, query: input.query, headers: input.headers }, { signingDate: when })).headers;
      assert.equal(ours['x-amz-security-token'], withToken.sessionToken);
      assert.equal(ours['authorization'], theirs['authorization'], when.toISOString());
    }
  });
});
