import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/log/logger.ts';
import type { KubeObject, KubeRest } from '../lib/kube/rest.ts';

export interface WatchOptions {
  rest: KubeRest;
  /** A collection path, e.g. /apis/backbeat.io/v1alpha1/namespaces/ns/locations. */
  path: string;
  /**
   * Called after every list, and for every event that changes what a reconcile reads: an object added
   * or deleted, or a new generation, deletion, finalizers, labels or annotations. Status-only updates
   * (the operator's own writes among them) are not changes: they would make it chase its own tail.
   */
  onChange(): void;
  logger: Logger;
  /** The watch is ended and the collection listed again this often (the server closes it then). */
  relistMs?: number;
  /** No event and no bookmark for this long: the stream is taken for stalled and started again. */
  quietMs?: number;
}

export interface Watch {
  stop(): void;
}

/**
 * List, then watch from the list's resourceVersion; start over on a periodic relist, on a stall, on an
 * expired resourceVersion (410) or on any error (with backoff). Level-triggered: events carry no payload to
 * the reconciler, only a nudge.
 */
export function watchCollection(options: WatchOptions): Watch {
  const { rest, path, logger } = options;
  const relistMs = options.relistMs ?? 300_000;
  const quietMs = options.quietMs ?? 90_000;
  const stopper = new AbortController();
  const stopped = (): boolean => stopper.signal.aborted;
  let current: { destroy(): void } | undefined;
  const seen = new Map<string, string>();
  const signature = (m: KubeObject['metadata'] | undefined): string => JSON.stringify([m?.generation, m?.deletionTimestamp, m?.finalizers, m?.labels, m?.annotations]);

  async function once(): Promise<void> {
    const { items, resourceVersion } = await rest.list(path);
    seen.clear();
    for (const o of items) seen.set(o.metadata.uid ?? o.metadata.name, signature(o.metadata));
    options.onChange();
    const query = new URLSearchParams({ watch: '1', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(Math.ceil(relistMs / 1000)) });
    const stream = await rest.stream(`${path}?${query.toString()}`);
    current = stream;
    if (stopper.signal.aborted) stream.destroy();
    let timer: NodeJS.Timeout | undefined;
    const watchdog = { fired: false };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        logger.warn('watch went quiet; starting it again', { path, quietMs });
        watchdog.fired = true;
        stream.destroy();
      }, quietMs);
    };
    arm();
    let pending = '';
    try {
      for await (const chunk of stream) {
        arm();
        pending += (chunk as Buffer).toString('utf8');
        let newline: number;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line.trim() === '') continue;
          const event = JSON.parse(line) as { type: string; object: { code?: number; message?: string; metadata?: KubeObject['metadata'] } };
          if (event.type === 'ERROR') throw new Error(`watch error ${String(event.object.code)}: ${event.object.message ?? ''}`);
          if (event.type === 'BOOKMARK') continue;
          const id = event.object.metadata?.uid ?? event.object.metadata?.name ?? '';
          const before = seen.get(id);
          const after = signature(event.object.metadata);
          if (event.type === 'DELETED') seen.delete(id);
          else seen.set(id, after);
          if (event.type !== 'MODIFIED' || before !== after) options.onChange();
        }
      }
    } catch (err) {
      // A stream destroyed by the watchdog or by stop() ends here too: start over at once (or stop).
      if (!watchdog.fired && !stopped()) throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  void (async () => {
    let backoff = 1_000;
    while (!stopper.signal.aborted) {
      try {
        await once();
        backoff = 1_000;
      } catch (err) {
        if (stopped()) break;
        logger.warn('watch failed; listing again', { path, error: (err as Error).message, retryInMs: backoff });
        await sleep(backoff, undefined, { signal: stopper.signal }).catch(() => undefined);
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  })();

  return {
    stop() {
      stopper.abort();
      current?.destroy();
    },
  };
}
