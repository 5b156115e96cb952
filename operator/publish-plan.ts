import { compileRule, type CompiledRule, type SourcedRule } from '../lib/config/bucket-config.ts';
import type { ReplicationRule } from '../lib/config/schema.ts';
import { canonical, type ConditionInput } from './conditions.ts';
import type { PublishedRule } from './published-state.ts';

// Which form of each rule the workers get. A rule whose every precondition holds is published as it is
// written now. A rule that fails for a reason of the world around it (an endpoint down, a bucket gone or
// unversioned, notifications not wired, a check that could not run) keeps the form already published,
// if any, so that nothing the workers would queue is dropped while it lasts: the copies wait for the
// destination, or land in the failed set with a reason, as S3's own replication does with a bucket
// gone. Only what the rule itself says can take it out: its deletion, or a spec that cannot be
// published as written. Never published rules reach the workers only whole, once all holds.

/** Failures of the rule as written: it is taken out of what the workers read. */
export const PERMANENT = new Set(['InvalidSpec', 'LocationNotFound']);

export type Publication = 'current' | 'kept' | 'none';

export interface PublicationPlan {
  rules: SourcedRule[];
  /** Per live rule, which form it is meant to have. */
  plan: Map<string, Publication>;
}

type Rule = ReplicationRule & { metadata: { name: string } };

export function planPublication(live: Rule[], decisions: ReadonlyMap<string, ConditionInput>, published: ReadonlyMap<string, PublishedRule>): PublicationPlan {
  const rules: SourcedRule[] = [];
  const plan = new Map<string, Publication>();
  for (const rule of live) {
    const { name } = rule.metadata;
    const { location, bucket } = rule.spec.source;
    const decision = decisions.get(name);
    const before = published.get(name);
    if (decision?.status === 'True') {
      rules.push({ location, bucket, rule: compileRule(rule) });
      plan.set(name, 'current');
    } else if (before !== undefined && before.location === location && before.bucket === bucket && (decision === undefined || !PERMANENT.has(decision.reason))) {
      // (A decision missing means its check failed to run: that too passes.)
      rules.push(before);
      plan.set(name, 'kept');
    } else plan.set(name, 'none');
  }
  return { rules, plan };
}

/** Whether a published form is the one the rule compiles to now. */
export function isCurrent(rule: ReplicationRule, form: CompiledRule): boolean {
  return canonical(compileRule(rule)) === canonical(form);
}

/**
 * The `Published` condition of a live rule, from what the workers read now (`form`) and the Deployment
 * reading it that could not be rolled onto it yet (`behind`), and its Ready condition told whether it
 * is still published.
 */
export function publishedConditions(rule: ReplicationRule & { metadata: { generation?: number } }, decision: ConditionInput, form: PublishedRule | undefined, behind?: string): { ready: ConditionInput; published: ConditionInput } {
  const generation = String(rule.metadata.generation ?? 0);
  const { location, bucket } = rule.spec.source;
  if (form === undefined || form.location !== location || form.bucket !== bucket) {
    const published: ConditionInput =
      decision.status === 'True'
        ? { type: 'Published', status: 'False', reason: 'PublishFailed', message: `generation ${generation} could not be written to the workers' config yet; retrying` }
        : { type: 'Published', status: 'False', reason: 'NotPublished', message: 'the workers get this rule once it is Ready' };
    return { ready: decision, published };
  }
  if (isCurrent(rule, form.rule)) {
    const published: ConditionInput =
      behind === undefined
        ? { type: 'Published', status: 'True', reason: 'Current', message: `the workers read generation ${generation}` }
        : { type: 'Published', status: 'True', reason: 'Rolling', message: `generation ${generation} is written; Deployment ${behind}, which reads it, could not be rolled onto it yet; retrying` };
    return { ready: decision.status === 'True' ? decision : { ...decision, message: `${decision.message} (still published: replication resumes once this is fixed)` }, published };
  }
  const published: ConditionInput = { type: 'Published', status: 'True', reason: 'PreviousConfig', message: `the workers keep the config published before generation ${generation}, which is not published yet` };
  return { ready: decision.status === 'True' ? decision : { ...decision, message: `${decision.message} (the config published before stays in effect until this is fixed)` }, published };
}
