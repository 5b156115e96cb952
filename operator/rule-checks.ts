import type { S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import type { Location, ReplicationRule, WebhookJournal } from '../lib/config/schema.ts';
import { checkSemantics } from '../lib/config/semantics.ts';
import type { KubeObject } from '../lib/kube/rest.ts';
import type { Logger } from '../lib/log/logger.ts';
import { reasonOf } from '../lib/s3/errors.ts';
import { checkBucket } from './buckets.ts';
import { journalArns, topicsClient, wireJournal, wireWebhookTopic } from '../lib/s3/notifications.ts';
import { CREDENTIALS_LABEL } from './locations.ts';
import { notReady, ready, type ConditionInput } from './conditions.ts';
import { forEachLimit } from './pool.ts';

// A rule's preconditions, in the order a person would fix them; the first failure is its Ready
// condition. Thousands of rules must not cost thousands of S3 calls at every pass: a bucket's existence
// comes from its Location's listing (the probe made it), each bucket is checked once per pass however
// many rules name it, and the checks that need a call per bucket (versioning, notification wiring) are
// repeated for a rule only when it or its Locations changed, when one of them was not Ready, or every
// `recheckMs`. That memory only spares calls: a restarted operator checks everything once again.

export type RuleObject = ReplicationRule & KubeObject;
export type LocationObject = Location & KubeObject;

export interface PassFacts {
  locations: ReadonlyMap<string, LocationObject>;
  locationReady: ReadonlyMap<string, ConditionInput>;
  /** A client of each Ready Location. */
  clients: ReadonlyMap<string, S3Client>;
  /** The buckets each Ready Location listed this pass. */
  listings: ReadonlyMap<string, ReadonlySet<string>>;
  /** Where each Location with a webhook journal is received, by Location name. */
  webhooks?: ReadonlyMap<string, WebhookTarget>;
}

export interface WebhookTarget {
  /** The receiver's base URL as the source server reaches it. */
  url: string;
  /** The token senders present; undefined when its Secret cannot be used (missing, unlabelled, no key). */
  token: string | undefined;
  /** The topic created on the server (createTopic). */
  topic: string;
}

export interface RuleChecksOptions {
  /** How often a rule's per-bucket checks are repeated when nothing changed. */
  recheckMs: number;
  /**
   * At most this many rules whose checks call the servers, per pass; the others wait for the next
   * pass, which follows at once. A pass stays short however many rules arrive together, so that other
   * changes are not held up, and the first rules are published while the rest are checked.
   */
  perPass: number;
  concurrency: number;
  logger: Logger;
}

export interface Decisions {
  /** By rule name; a rule without one was not decided this pass. */
  decisions: Map<string, ConditionInput>;
  /** Rules left for the next pass (over `perPass`). */
  deferred: number;
}

export class RuleChecks {
  private readonly o: RuleChecksOptions;
  /** Rules whose every check passed: under which generations, and until when that stands. */
  private readonly verified = new Map<string, { key: string; due: number }>();
  /** When each rule was last checked against the servers: the longest waiting go first. */
  private readonly attempted = new Map<string, number>();

  constructor(options: RuleChecksOptions) {
    this.o = options;
  }

  /**
   * The decision of every rule (up to `perPass` of those that need calls). Rules of one source bucket
   * run one after the other (its notification settings are one document to read and write), different
   * buckets concurrently. `before` runs first for each rule (its finalizer); a rule whose check throws
   * gets no decision.
   */
  async decide(rules: RuleObject[], facts: PassFacts, before: (rule: RuleObject) => Promise<void>, failed: (rule: RuleObject, err: unknown) => void): Promise<Decisions> {
    const decisions = new Map<string, ConditionInput>();
    const buckets = new Map<string, Promise<ConditionInput | undefined>>();
    const costly = rules
      .filter((r) => this.preflight(r, facts) === undefined && !this.fresh(r, facts))
      .sort((x, y) => (this.attempted.get(x.metadata.name) ?? 0) - (this.attempted.get(y.metadata.name) ?? 0) || x.metadata.name.localeCompare(y.metadata.name));
    const later = new Set(costly.slice(this.o.perPass).map((r) => r.metadata.name));
    const now = Date.now();
    for (const r of costly.slice(0, this.o.perPass)) this.attempted.set(r.metadata.name, now);
    const bySource = new Map<string, RuleObject[]>();
    for (const r of rules) {
      if (later.has(r.metadata.name)) continue;
      const key = `${r.spec.source.location}/${r.spec.source.bucket}`;
      const list = bySource.get(key);
      if (list === undefined) bySource.set(key, [r]);
      else list.push(r);
    }
    await forEachLimit(bySource.values(), this.o.concurrency, async (group) => {
      for (const rule of group) {
        try {
          await before(rule);
          const decision = this.preflight(rule, facts) ?? (await this.servers(rule, facts, buckets));
          if (decision.status !== 'True') this.verified.delete(rule.metadata.name);
          decisions.set(rule.metadata.name, decision);
        } catch (err) {
          this.verified.delete(rule.metadata.name);
          failed(rule, err);
        }
      }
    });
    const live = new Set(rules.map((r) => r.metadata.name));
    for (const memory of [this.verified, this.attempted]) for (const name of memory.keys()) if (!live.has(name)) memory.delete(name);
    if (later.size > 0) this.o.logger.info('rule checks continue in the next pass', { checked: costly.length - later.size, waiting: later.size });
    return { decisions, deferred: later.size };
  }

  /** The memory key of a rule's checks: its generation and its Locations', and the webhook token its topic was given. */
  private key(rule: RuleObject, facts: PassFacts): string {
    const named = [rule.spec.source.location, ...rule.spec.destinations.map((d) => d.location)];
    const token = facts.webhooks?.get(rule.spec.source.location)?.token;
    return [rule.metadata.generation ?? 0, ...named.map((l) => `${l}@${String(facts.locations.get(l)?.metadata.generation ?? 0)}`), ...(token !== undefined ? [createHash('sha256').update(token).digest('hex').slice(0, 16)] : [])].join('|');
  }

  /** Verified before, and neither it nor its Locations changed since: no call needed. */
  private fresh(rule: RuleObject, facts: PassFacts): boolean {
    const cached = this.verified.get(rule.metadata.name);
    return cached !== undefined && cached.key === this.key(rule, facts) && Date.now() < cached.due;
  }

  /** What can be told without a call: the spec, and whether its Locations exist and are Ready. */
  private preflight(rule: RuleObject, facts: PassFacts): ConditionInput | undefined {
    const { locations, locationReady } = facts;
    const name = rule.metadata.name;
    const problems = checkSemantics({ locations: locations as Map<string, LocationObject>, rules: new Map([[name, rule]]), secrets: new Map() }, () => undefined).filter((p) => p.resource === `ReplicationRule/${name}`);
    const unknown = problems.find((p) => p.message.startsWith('unknown Location'));
    if (unknown !== undefined) return notReady('LocationNotFound', `${unknown.path}: ${unknown.message}`);
    const invalid = problems[0];
    if (invalid !== undefined) return notReady('InvalidSpec', `${invalid.path}: ${invalid.message}`);
    for (const d of [rule.spec.source.location, ...rule.spec.destinations.map((x) => x.location)]) {
      if (!locations.has(d)) return notReady('LocationNotFound', `Location "${d}" does not exist`);
      const c = locationReady.get(d);
      if (c?.status !== 'True') return notReady('LocationNotReady', `Location "${d}" is not ready: ${c?.message ?? 'not checked yet'}`);
    }
    return undefined;
  }

  /** The buckets and the journal wiring; a rule verified before (fresh) only needs its buckets listed. */
  private async servers(rule: RuleObject, facts: PassFacts, buckets: Map<string, Promise<ConditionInput | undefined>>): Promise<ConditionInput> {
    const { locations, clients, listings } = facts;
    const { source, destinations } = rule.spec;
    const fresh = this.fresh(rule, facts);
    const client = (l: string): S3Client => clients.get(l) as S3Client;
    const bucket = (location: string, b: string, role: 'source' | 'destination'): Promise<ConditionInput | undefined> => {
      const listed = listings.get(location)?.has(b) === true;
      // A blob container has nothing more to check (versioning, where the account has it, is the account's).
      if (locations.get(location)?.spec.type === 'azure') return Promise.resolve(listed ? undefined : notReady('BucketNotFound', `${role} container ${location}/${b} does not exist in the Azure account`));
      if (fresh && listed) return Promise.resolve(undefined);
      const id = `${role}:${location}/${b}`;
      let answer = buckets.get(id);
      if (answer === undefined) {
        answer = checkBucket(client(location), location, b, role, listed);
        buckets.set(id, answer);
      }
      return answer;
    };
    try {
      const failure = (await bucket(source.location, source.bucket, 'source')) ?? (await firstOf(destinations.map((d) => () => bucket(d.location, d.bucket, 'destination'))));
      if (failure !== undefined) return failure;
    } catch (err) {
      return notReady('BucketUnavailable', `buckets cannot be checked: ${reasonOf(err)}`);
    }
    const sourceLocation = locations.get(source.location) as LocationObject;
    const hook = sourceLocation.spec.journal?.webhook;
    const arns = journalArns(sourceLocation);
    const replicating = (how: string): ConditionInput => ready('Replicating', `replicating ${source.location}/${source.bucket} to ${String(destinations.length)} destination(s); journal: ${how}`);
    let decision: ConditionInput;
    if (hook !== undefined) {
      decision = await this.webhook(rule, hook, facts.webhooks?.get(source.location), client, fresh, replicating);
      if (decision.status !== 'True') return decision;
    } else if (arns.length === 0) {
      decision = replicating(sourceLocation.spec.journal?.kafka !== undefined ? 'notifications are the user\'s to wire (no targetId)' : 'listing scans');
    } else {
      if (!fresh) {
        try {
          const wired = await wireJournal(client(source.location), source.bucket, arns);
          if (wired === 'added') this.o.logger.info('journal wired', { bucket: `${source.location}/${source.bucket}` });
        } catch (err) {
          return notReady('JournalNotWired', `event notifications of ${source.location}/${source.bucket} could not be sent to target ${sourceLocation.spec.journal?.kafka?.targetId ?? ''}: ${reasonOf(err)}`);
        }
      }
      decision = replicating('event notifications');
    }
    if (!fresh) this.remember(rule, facts);
    return decision;
  }

  /** Spread over the interval, so that thousands of rules verified together are not all due together. */
  private remember(rule: RuleObject, facts: PassFacts): void {
    this.verified.set(rule.metadata.name, { key: this.key(rule, facts), due: Date.now() + this.o.recheckMs * (0.75 + Math.random() / 2) });
  }

  /**
   * A source with a webhook journal: its receiver runs (a Deployment and a Service of its own); with
   * createTopic, the server's topic pushing there and the bucket's notifications are wired too.
   */
  private async webhook(rule: RuleObject, hook: WebhookJournal, target: WebhookTarget | undefined, client: (location: string) => S3Client, fresh: boolean, replicating: (how: string) => ConditionInput): Promise<ConditionInput> {
    const { source } = rule.spec;
    const at = `${target?.url ?? ''}/v1/journal/${encodeURIComponent(source.location)}`;
    if (hook.createTopic !== true) return replicating(`event notifications POSTed to the webhook receiver at ${at}, which the user wires`);
    if (target?.token === undefined) {
      return notReady('WebhookTokenUnavailable', `Secret "${hook.tokenSecretRef.name}" does not exist, has no key "${hook.tokenSecretRef.key ?? 'token'}", or is not labelled ${CREDENTIALS_LABEL}=true: the topic cannot be given the token`);
    }
    if (!fresh) {
      try {
        const s3 = client(source.location);
        const wired = await wireWebhookTopic(s3, await topicsClient(s3), source.bucket, target.topic, `${at}?token=${encodeURIComponent(target.token)}`);
        if (wired === 'added') this.o.logger.info('journal wired to the webhook receiver', { bucket: `${source.location}/${source.bucket}`, topic: target.topic });
      } catch (err) {
        return notReady('JournalNotWired', `event notifications of ${source.location}/${source.bucket} could not be sent through topic ${target.topic}: ${reasonOf(err)}`);
      }
    }
    return replicating(`event notifications through topic ${target.topic} to the webhook receiver at ${at}`);
  }
}

/** The first defined answer of checks run one after the other. */
async function firstOf<T>(checks: (() => Promise<T | undefined>)[]): Promise<T | undefined> {
  for (const check of checks) {
    const answer = await check();
    if (answer !== undefined) return answer;
  }
  return undefined;
}
