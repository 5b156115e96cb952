/** How a role retries a failing S3 request: bounded for transient errors, with backoff. */
export interface RetryPolicy {
  /** Attempts for a transient failure (5xx, throttling) before giving up. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 500, maxDelayMs: 30_000 };

/** Exponential backoff with equal jitter (half the step, plus up to the other half at random): spreads retries of many objects after a shared outage. */
export function backoff(attempt: number, policy: RetryPolicy): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}
