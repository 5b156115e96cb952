// Kubernetes-style conditions (metav1.Condition) and the status they live in.

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration: number;
  lastTransitionTime: string;
}

/** A condition as a reconcile decides it; the time and generation are filled in by `setCondition`. */
export type ConditionInput = Pick<Condition, 'type' | 'status' | 'reason' | 'message'>;

/**
 * The conditions after setting `next`: lastTransitionTime moves only when the status flips, so that
 * writing the same decision again changes nothing.
 */
export function setCondition(current: Condition[] | undefined, next: ConditionInput, generation: number, now = new Date()): Condition[] {
  const list = current ?? [];
  const old = list.find((c) => c.type === next.type);
  const merged: Condition = {
    ...next,
    observedGeneration: generation,
    lastTransitionTime: old !== undefined && old.status === next.status ? old.lastTransitionTime : now.toISOString(),
  };
  return [...list.filter((c) => c.type !== next.type), merged].sort((a, b) => a.type.localeCompare(b.type));
}

export const ready = (reason: string, message: string): ConditionInput => ({ type: 'Ready', status: 'True', reason, message });
export const notReady = (reason: string, message: string): ConditionInput => ({ type: 'Ready', status: 'False', reason, message });

/** Deterministic JSON (sorted keys), to tell whether a status really changed. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))) : v,
  );
}
