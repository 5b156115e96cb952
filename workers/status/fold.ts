import { Type, type Static } from '@sinclair/typebox';
import { ChangeKindSchema, Count, DestinationStateSchema, GcStateSchema, ObjectRef, Reason, Str, TaskDestination, Time, type DestinationState, type StatusEvent } from '../../lib/queue/messages.ts';

// A version's status as the status role folds it from its events, and as its store's changelog carries
// it: a schema, so that a record read back from the changelog is checked like any other message.

export const ObjectStateSchema = Type.Union([Type.Literal('PENDING'), Type.Literal('COMPLETED'), Type.Literal('FAILED'), Type.Literal('SKIPPED')]);
export type ObjectState = Static<typeof ObjectStateSchema>;

const destinationStatus = {
  state: DestinationStateSchema,
  reason: Type.Optional(Reason),
  /** Copy attempts over the version's whole life, retries included. */
  attempts: Count,
  firstFailureAt: Type.Optional(Time),
  lastFailureAt: Type.Optional(Time),
  bytes: Count,
  replicaEtag: Type.Optional(Str),
  /** How the replica was checked when its ETag cannot be the source's (absent: the same ETag). */
  verifiedBy: Type.Optional(Type.Union([Type.Literal('md5'), Type.Literal('size')])),
  updatedAt: Time,
};
export const DestinationStatus = Type.Object(destinationStatus);
export type DestinationStatus = Static<typeof DestinationStatus>;

/**
 * A change applied to a version after it COMPLETED (a tag change, a version delete) that failed for a
 * destination: the version stays COMPLETED, and this keeps the failure visible and retryable.
 */
export const FollowUp = Type.Object({ ...destinationStatus, kind: ChangeKindSchema, destination: Str });
export type FollowUp = Static<typeof FollowUp>;

export const ObjectStatus = Type.Object({
  object: ObjectRef,
  kind: ChangeKindSchema,
  eventTime: Time,
  size: Type.Optional(Count),
  state: ObjectStateSchema,
  destinations: Type.Record(Type.String(), DestinationStatus),
  /** Failed (or retried) follow-up changes, keyed `<kind> <destination>`. */
  followUps: Type.Optional(Type.Record(Type.String(), FollowUp)),
  /** Where each destination writes (bucket, key prefix): what the GC verifies. */
  targets: Type.Optional(Type.Array(TaskDestination)),
  /**
   * For a transient source: whether the source copy was deleted, or why not. A refusal is kept in the
   * failed set (`backbeat failed list`) with how many verdicts refused it and since when.
   */
  gc: Type.Optional(Type.Object({ state: GcStateSchema, reason: Type.Optional(Reason), at: Time, attempts: Type.Optional(Count), firstAt: Type.Optional(Time) })),
  /** Queued from a transient source (see the `queued` event): a candidate for the GC once COMPLETED. */
  transient: Type.Optional(Type.Boolean()),
  /** Destinations where the version was permanently deleted after the source deleted it (replicated version deletes). */
  deletedFrom: Type.Optional(Type.Array(Str)),
  updatedAt: Time,
});
export type ObjectStatus = Static<typeof ObjectStatus>;

/**
 * When the version stopped existing anywhere this engine looks after: collected from the transient
 * source by the GC, or permanently deleted on the source and on every destination that held it. Its
 * record can go some time after (a tombstone), while the totals keep counting it.
 */
export function goneAt(s: ObjectStatus): string | undefined {
  if (s.gc?.state === 'DELETED') return s.gc.at;
  if (s.kind === 'versionDelete' && s.state === 'COMPLETED') return s.updatedAt;
  const held = Object.entries(s.destinations).filter(([, d]) => d.state === 'COMPLETED').map(([id]) => id);
  return held.length > 0 && held.every((id) => s.deletedFrom?.includes(id) === true) ? s.updatedAt : undefined;
}

/**
 * The object's state from its destinations': COMPLETED once every destination is done (replicated, or
 * nothing to do), FAILED when a destination failed and none is still pending, else PENDING.
 */
export function overall(destinations: Record<string, DestinationStatus>): ObjectState {
  const states = Object.values(destinations).map((d) => d.state);
  if (states.length === 0 || states.includes('PENDING')) return 'PENDING';
  if (states.includes('FAILED')) return 'FAILED';
  return states.includes('COMPLETED') ? 'COMPLETED' : 'SKIPPED';
}

const settled = (s: DestinationState): boolean => s === 'COMPLETED' || s === 'SKIPPED';

function mergeTargets(known: TaskDestination[] | undefined, added: TaskDestination[]): TaskDestination[] {
  const byId = new Map((known ?? []).map((t) => [t.id, t]));
  for (const t of added) byId.set(t.id, t);
  return [...byId.values()];
}

/**
 * Folds one event into an object version's status; returns the new status, or the same object when the
 * event changes nothing. A destination that completed stays completed (a late duplicate FAILED or
 * PENDING cannot undo it), and an object that reached COMPLETED is final.
 */
export function fold(previous: ObjectStatus | undefined, event: StatusEvent): ObjectStatus {
  const base: ObjectStatus = previous ?? {
    object: event.object,
    kind: event.type === 'queued' ? event.kind : 'object',
    eventTime: event.type === 'queued' ? event.eventTime : event.at,
    state: 'PENDING',
    destinations: {},
    updatedAt: event.at,
  };
  if (event.type === 'gc') {
    // The GC acts on COMPLETED versions only; a DELETED verdict is final like COMPLETED is.
    if (base.gc?.state === 'DELETED') return base;
    const refusals = event.state === 'REFUSED' ? { attempts: (base.gc?.state === 'REFUSED' ? (base.gc.attempts ?? 1) : 0) + 1, firstAt: base.gc?.state === 'REFUSED' ? (base.gc.firstAt ?? base.gc.at) : event.at } : {};
    return { ...base, gc: { state: event.state, ...(event.reason !== undefined ? { reason: event.reason } : {}), at: event.at, ...refusals }, updatedAt: event.at };
  }
  if (previous?.state === 'COMPLETED') {
    // A rescan from a source made transient since marks the version a GC candidate.
    const current = event.type === 'queued' && event.transient === true && previous.transient !== true ? { ...previous, transient: true } : previous;
    // A destination the version did not have (added to the rule since, or another rule now matching)
    // re-opens it for that destination alone: what completed stays completed.
    const added = event.type === 'queued' && event.kind === current.kind ? event.destinations.filter((id) => current.destinations[id] === undefined) : [];
    if (added.length === 0 || event.type !== 'queued') return foldFollowUp(current, event);
    const destinations = { ...current.destinations };
    for (const id of added) destinations[id] = { state: 'PENDING', attempts: 0, bytes: 0, updatedAt: event.at };
    return { ...current, targets: mergeTargets(current.targets, event.targets), destinations, state: overall(destinations), updatedAt: event.at };
  }
  // A later change's result for a destination that already holds the version is a follow-up too.
  if (previous !== undefined && event.type === 'result' && event.kind !== undefined && event.kind !== previous.kind && previous.destinations[event.destination]?.state === 'COMPLETED') {
    return foldFollowUp(previous, event);
  }
  const destinations = { ...base.destinations };
  if (event.type === 'queued') {
    for (const id of event.destinations) {
      // Queued again (a retry, a rescan): a failed destination is pending again; a settled one stays.
      const d = destinations[id];
      if (d === undefined) destinations[id] = { state: 'PENDING', attempts: 0, bytes: 0, updatedAt: event.at };
      else if (d.state === 'FAILED') destinations[id] = { ...d, state: 'PENDING', updatedAt: event.at };
    }
  } else {
    const d = destinations[event.destination];
    // COMPLETED is final for a destination; a late SKIPPED or FAILED (a redelivered task) cannot undo it.
    if (d?.state === 'COMPLETED' || (d !== undefined && settled(d.state) && !settled(event.state))) return base;
    const failedAt = event.state === 'FAILED' ? { firstFailureAt: d?.firstFailureAt ?? event.at, lastFailureAt: event.at } : {};
    destinations[event.destination] = {
      state: event.state,
      ...(event.reason !== undefined ? { reason: event.reason } : {}),
      ...(d?.firstFailureAt !== undefined ? { firstFailureAt: d.firstFailureAt } : {}),
      ...(d?.lastFailureAt !== undefined ? { lastFailureAt: d.lastFailureAt } : {}),
      ...failedAt,
      attempts: (d?.attempts ?? 0) + event.attempts,
      bytes: event.bytes,
      ...(event.replicaEtag !== undefined ? { replicaEtag: event.replicaEtag } : {}),
      ...(event.verifiedBy !== undefined ? { verifiedBy: event.verifiedBy } : {}),
      updatedAt: event.at,
    };
  }
  const next: ObjectStatus = {
    ...base,
    ...(event.type === 'queued'
      ? {
          // A tag change of a version keeps the version's own kind (an object stays an object).
          kind: previous?.kind ?? event.kind,
          eventTime: previous?.eventTime ?? event.eventTime,
          targets: mergeTargets(base.targets, event.targets),
          ...(event.size !== undefined ? { size: event.size } : {}),
          ...(event.transient === true ? { transient: true } : {}),
        }
      : {}),
    destinations,
    updatedAt: event.at,
    state: overall(destinations),
  };
  return next;
}

/**
 * A COMPLETED version is final, but a later change of it (kind other than the version's own) can still
 * fail per destination. Only failures are recorded; a retry queues the change again (PENDING), and a
 * later success clears the record.
 */
function foldFollowUp(previous: ObjectStatus, event: Exclude<StatusEvent, { type: 'gc' }>): ObjectStatus {
  const kind = event.kind;
  if (kind === undefined || kind === previous.kind) return previous;
  let followUps = { ...previous.followUps };
  if (event.type === 'queued') {
    // The change may reach a destination the version did not have (new tags matching another rule):
    // its target is kept, so that a failure there can be retried.
    const targets = mergeTargets(previous.targets, event.targets);
    let changed = targets.length !== (previous.targets?.length ?? 0);
    if (changed) previous = { ...previous, targets };
    for (const destination of event.destinations) {
      const f = followUps[`${kind} ${destination}`];
      if (f === undefined || f.state !== 'FAILED') continue;
      followUps[`${kind} ${destination}`] = { ...f, state: 'PENDING', updatedAt: event.at };
      changed = true;
    }
    if (!changed) return previous;
  } else {
    const id = `${kind} ${event.destination}`;
    const f = followUps[id];
    if (kind === 'versionDelete' && event.state === 'COMPLETED' && previous.deletedFrom?.includes(event.destination) !== true) {
      previous = { ...previous, deletedFrom: [...(previous.deletedFrom ?? []), event.destination] };
      if (f === undefined) return { ...previous, updatedAt: event.at };
    }
    if (event.state !== 'FAILED') {
      if (f === undefined) return previous;
      followUps = Object.fromEntries(Object.entries(followUps).filter(([k]) => k !== id));
    } else {
      followUps[id] = {
        kind,
        destination: event.destination,
        state: 'FAILED',
        ...(event.reason !== undefined ? { reason: event.reason } : {}),
        attempts: (f?.attempts ?? 0) + event.attempts,
        firstFailureAt: f?.firstFailureAt ?? event.at,
        lastFailureAt: event.at,
        bytes: 0,
        updatedAt: event.at,
      };
    }
  }
  const next: ObjectStatus = { ...previous, followUps, updatedAt: event.at };
  if (Object.keys(followUps).length === 0) delete next.followUps;
  return next;
}
