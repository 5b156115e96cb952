import { createHash, timingSafeEqual } from 'node:crypto';
import type { KubeRest } from '../../lib/kube/rest.ts';

/**
 * What a control API request asks to do, in Kubernetes RBAC terms, so that a Role decides who may:
 * reads are `get` on replicationrules; pause/resume, retry and backfill are `create` on the
 * subresources locations/pause, locations/retry and replicationrules/backfill (named where one is).
 */
export interface ApiAction {
  verb: 'get' | 'create';
  resource: 'replicationrules' | 'locations';
  subresource?: 'pause' | 'retry' | 'backfill';
  name?: string;
}

/** A request the API refuses: 401 without valid credentials, 403 when they may not, 503 when it cannot tell now. */
export class Refused extends Error {
  readonly code: 401 | 403 | 503;
  constructor(code: 401 | 403 | 503, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ApiAuth {
  /** How callers authenticate, for messages: e.g. "a Kubernetes bearer token". */
  readonly kind: string;
  /** Resolves when the request's Authorization header allows `action`; throws Refused otherwise. */
  check(authorization: string | undefined, action: ApiAction): Promise<void>;
}

const actionText = (a: ApiAction): string => `${a.verb} ${a.resource}${a.subresource !== undefined ? `/${a.subresource}` : ''}${a.name !== undefined ? ` "${a.name}"` : ''}`;

function bearer(authorization: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m?.[1];
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Without credentials: only for an API bound to loopback, where only this machine's users reach it. */
export const openAuth: ApiAuth = { kind: 'none', check: () => Promise.resolve() };

/** One shared token (local mode): compared in constant time, by digest so that lengths leak nothing either. */
export function tokenAuth(token: string): ApiAuth {
  const want = digest(token);
  return {
    kind: 'the API token',
    check(authorization) {
      const given = bearer(authorization);
      if (given === undefined) return Promise.reject(new Refused(401, 'this API needs the API token: send "Authorization: Bearer <token>" (backbeat: --token-file)'));
      if (!timingSafeEqual(digest(given), want)) return Promise.reject(new Refused(401, 'the API token is wrong'));
      return Promise.resolve();
    },
  };
}

interface UserInfo {
  username?: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

/** Answers kept briefly, keyed by digests (never a token): a CLI call fans out to every replica. */
class Memo<T> {
  private readonly entries = new Map<string, { value: T; until: number }>();
  private readonly ttlMs: number;
  private readonly max: number;
  constructor(ttlMs: number, max = 4096) {
    this.ttlMs = ttlMs;
    this.max = max;
  }

  async get(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.entries.get(key);
    if (hit !== undefined && hit.until > Date.now()) return hit.value;
    const value = await load();
    this.entries.delete(key);
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { value, until: Date.now() + this.ttlMs });
    return value;
  }
}

/**
 * The Kubernetes way (what kube-rbac-proxy and aggregated API servers do): the bearer token is checked
 * by a TokenReview, then a SubjectAccessReview asks whether its user may do the action in `namespace`.
 * So `kubectl` RBAC decides who may pause or retry; the status pods need system:auth-delegator.
 */
export function kubernetesAuth(rest: KubeRest, namespace: string, ttlMs = 10_000): ApiAuth {
  const users = new Memo<UserInfo | undefined>(ttlMs);
  const decisions = new Memo<{ allowed: boolean; reason?: string }>(ttlMs);
  const ask = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      throw new Refused(503, `the Kubernetes API server could not ${what} now (${(err as Error).message}); try again`);
    }
  };
  return {
    kind: 'a Kubernetes bearer token',
    async check(authorization, action) {
      const token = bearer(authorization);
      if (token === undefined) throw new Refused(401, 'this API needs a Kubernetes bearer token: send "Authorization: Bearer <token>" (backbeat: --token-file, or a kubeconfig with a token; kubectl create token makes one)');
      const tokenKey = digest(token).toString('hex');
      const user = await users.get(tokenKey, () =>
        ask('review the token', async () => {
          const review = await rest.create<{ status?: { authenticated?: boolean; user?: UserInfo } }>('/apis/authentication.k8s.io/v1/tokenreviews', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } });
          return review.status?.authenticated === true ? (review.status.user ?? {}) : undefined;
        }),
      );
      if (user === undefined) throw new Refused(401, 'the Kubernetes API server did not accept the token');
      const decision = await decisions.get(`${tokenKey} ${JSON.stringify(action)}`, () =>
        ask('review the access', async () => {
          const review = await rest.create<{ status?: { allowed?: boolean; reason?: string } }>('/apis/authorization.k8s.io/v1/subjectaccessreviews', {
            apiVersion: 'authorization.k8s.io/v1',
            kind: 'SubjectAccessReview',
            spec: {
              ...(user.username !== undefined ? { user: user.username } : {}),
              ...(user.uid !== undefined ? { uid: user.uid } : {}),
              ...(user.groups !== undefined ? { groups: user.groups } : {}),
              ...(user.extra !== undefined ? { extra: user.extra } : {}),
              resourceAttributes: { namespace, group: 'backbeat.io', verb: action.verb, resource: action.resource, ...(action.subresource !== undefined ? { subresource: action.subresource } : {}), ...(action.name !== undefined ? { name: action.name } : {}) },
            },
          });
          return { allowed: review.status?.allowed === true, ...(review.status?.reason !== undefined && review.status.reason !== '' ? { reason: review.status.reason } : {}) };
        }),
      );
      if (!decision.allowed) throw new Refused(403, `${user.username ?? 'this user'} may not ${actionText(action)} in namespace ${namespace}${decision.reason !== undefined ? ` (${decision.reason})` : ''}`);
    },
  };
}
