import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * What the status replicas trust each other by: a key only they hold (a Secret the operator creates and
 * mounts in the status pods alone). Without it, whoever can write to the owners topic could name any URL
 * as a partition's owner, and the replicas would forward callers' requests there, bearer tokens
 * included. With it:
 * - an owner record counts only when signed with the key (a forged one is ignored);
 * - a forwarded request carries no caller token, but an assertion signed with the key that this
 *   request (method, path, body) was authorized by a replica within the last 30 s: the next replica
 *   answers it without asking Kubernetes again, and nobody can use it for anything else.
 */
export class PeerKey {
  private readonly key: Buffer;

  /** Tells keys apart in logs without revealing them: replicas with different ones ignore each other. */
  readonly fingerprint: string;

  constructor(key: Buffer) {
    if (key.length < 16) throw new Error('the status peer key must be at least 16 bytes');
    this.key = key;
    this.fingerprint = createHash('sha256').update('backbeat peer key').update(key).digest('hex').slice(0, 12);
  }

  private mac(...parts: string[]): Buffer {
    return createHmac('sha256', this.key).update(parts.join('\n')).digest();
  }

  private same(given: string, expected: Buffer): boolean {
    const g = Buffer.from(given, 'base64url');
    return g.length === expected.length && timingSafeEqual(g, expected);
  }

  signOwner(o: { partition: number; url: string; at: string }): string {
    return this.mac('owner', String(o.partition), o.url, o.at).toString('base64url');
  }

  ownerSigned(o: { partition: number; url: string; at: string; sig?: string | undefined }): boolean {
    return o.sig !== undefined && this.same(o.sig, this.mac('owner', String(o.partition), o.url, o.at));
  }

  /** The header value a forwarded request carries: when, and the signature over it and the request. */
  assert(method: string, path: string, body: string, now = Date.now()): string {
    return `${String(now)}.${this.mac('forward', String(now), method, path, sha256(body)).toString('base64url')}`;
  }

  /** Whether `header` is a fresh assertion this key made for exactly this request. */
  asserted(header: string | undefined, method: string, path: string, body: string, now = Date.now()): boolean {
    const m = header === undefined ? null : /^(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(header);
    if (m === null) return false;
    const at = Number(m[1]);
    return Math.abs(now - at) <= ASSERTION_MAX_AGE_MS && this.same(m[2] ?? '', this.mac('forward', String(at), method, path, sha256(body)));
  }
}

const ASSERTION_MAX_AGE_MS = 30_000;
const sha256 = (s: string): string => createHash('sha256').update(s).digest('base64url');
