import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createLogger } from './logger.ts';
import { MASK, redact, registerSecret } from './redact.ts';

type Line = Record<string, unknown>;

function capture(): { stream: PassThrough; lines: () => Line[]; first: () => Line } {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c.toString('utf8')));
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Line),
    first() {
      const line = this.lines()[0];
      assert.ok(line, 'nothing was logged');
      return line;
    },
  };
}

describe('logger', () => {
  it('writes one JSON object per line with level, message, component and timestamp', () => {
    const out = capture();
    const log = createLogger({ component: 'populator', stream: out.stream });
    log.info('started', { partitions: 3 });
    const line = out.first();
    assert.equal(line['level'], 'info');
    assert.equal(line['message'], 'started');
    assert.equal(line['component'], 'populator');
    assert.equal(line['partitions'], 3);
    assert.match(String(line['timestamp']), /^\d{4}-\d\d-\d\dT/);
  });

  it('masks secret-named fields at any depth and registered secret values in any string', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    registerSecret(secret);
    const out = capture();
    const log = createLogger({ component: 'processor', stream: out.stream });
    log.warn(`request signed with ${secret} failed`, {
      location: { endpoint: 'http://s3', credentials: { accessKeyId: 'AKIA1', secretAccessKey: secret } },
      headers: { Authorization: 'AWS4-HMAC-SHA256 Credential=AKIA1/…, Signature=abc' },
      detail: `body echoed ${secret}`,
    });
    const text = JSON.stringify(out.lines());
    assert.ok(!text.includes(secret), text);
    assert.ok(!text.includes('Signature=abc'), text);
    const line = out.first();
    assert.equal(line['message'], `request signed with ${MASK} failed`);
    assert.deepEqual(line['location'], { endpoint: 'http://s3', credentials: MASK });
    assert.equal((line['headers'] as Record<string, unknown>)['Authorization'], MASK);
  });

  it('masks secrets inside logged errors, message and stack alike', () => {
    const secret = 'super-secret-password-123';
    registerSecret(secret);
    const out = capture();
    const log = createLogger({ component: 'gc', stream: out.stream });
    log.error('copy failed', { error: new Error(`denied for ${secret}`) });
    const text = JSON.stringify(out.lines());
    assert.ok(!text.includes(secret), text);
    assert.match(text, /denied for \[REDACTED\]/);
  });
});

describe('redact', () => {
  it('leaves ordinary values alone and survives cycles', () => {
    const a: Record<string, unknown> = { bucket: 'photos', size: 10, ok: true, when: new Date(0) };
    a['self'] = a;
    assert.deepEqual(redact(a), {
      bucket: 'photos',
      size: 10,
      ok: true,
      when: '1970-01-01T00:00:00.000Z',
      self: '[Circular]',
    });
  });

  it('does not register values too short to be credentials', () => {
    registerSecret('ab');
    assert.equal(redact('abc tab'), 'abc tab');
  });
});
