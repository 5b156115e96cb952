import { createRequire } from 'node:module';

// kafkajs 2.2.4 (unmaintained) keeps a 1 ms timer going on every broker connection: with nothing pending
// and no throttle, RequestQueue.scheduleCheckPendingRequests computes a negative delay (throttledUntil
// is -1) and sets a timer that calls it again (tulios/kafkajs#1556, #1704; the fix of PR #1667, never
// merged). About a thousand timers a second per connection: most of an idle process's CPU, and Node
// 24's TimeoutNegativeWarning. Replaced here on kafkajs' own class, as the PR does: no timer when
// nothing is pending and nothing throttled (a new request, or an answered one, checks the queue again).

/** kafkajs' CHECK_PENDING_REQUESTS_INTERVAL (not exported): a check of requests held back by in-flight limits. */
const CHECK_PENDING_REQUESTS_INTERVAL_MS = 10;

export interface RequestQueueState {
  throttledUntil: number;
  pending: unknown[];
  throttleCheckTimeoutId: ReturnType<typeof setTimeout> | null;
  checkPendingRequests: (this: RequestQueueState) => void;
  scheduleCheckPendingRequests: (this: RequestQueueState) => void;
}

/** kafkajs' RequestQueue class, as the connections of the kafkajs this process loads use it. */
export const RequestQueue = createRequire(import.meta.url)('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueState };

RequestQueue.prototype.scheduleCheckPendingRequests = function scheduleCheckPendingRequests(this: RequestQueueState): void {
  if (this.throttleCheckTimeoutId !== null) return;
  let wait = this.throttledUntil - Date.now();
  if (this.pending.length > 0) wait = wait > 0 ? wait : CHECK_PENDING_REQUESTS_INTERVAL_MS;
  else if (wait <= 0) return;
  this.throttleCheckTimeoutId = setTimeout(() => {
    this.throttleCheckTimeoutId = null;
    this.checkPendingRequests();
  }, wait);
};
