import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Retries `check` until it stops throwing, or rethrows its last error after `timeoutMs`. For asserting
 * what asynchronous components reach, without fixed sleeps.
 */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 30_000, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await sleep(intervalMs);
  }
}
