import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { RequestQueue, type RequestQueueState } from './kafkajs-request-queue.ts';

// kafkajs' own request queue class with the fix applied, driven as a connection drives it (its requests
// recorded instead of written to a socket; the e2e queue suite checks idle connections on a real broker).

type Queue = RequestQueueState & {
  push(request: { entry: { correlationId: number; apiName: string; resolve: () => void; reject: (e: Error) => void }; expectResponse: boolean; sendRequest: () => void }): void;
  fulfillRequest(answer: { correlationId: number; payload: Buffer; size: number }): void;
  destroy(): void;
};

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

function queue(maxInFlightRequests: number): { q: Queue; sent: number[]; push: (id: number) => void } {
  const Constructor = RequestQueue as unknown as new (options: object) => Queue;
  const q = new Constructor({ maxInFlightRequests, requestTimeout: 30_000, enforceRequestTimeout: false, clientId: 'test', broker: 'b:9092', logger: silent });
  const sent: number[] = [];
  const push = (id: number): void => q.push({ entry: { correlationId: id, apiName: 'Fetch', resolve: () => undefined, reject: () => undefined }, expectResponse: true, sendRequest: () => sent.push(id) });
  return { q, sent, push };
}

describe("kafkajs' request queue, fixed (kafkajs-request-queue.ts)", () => {
  it('sets no timer once nothing is pending: answered requests leave the connection idle', () => {
    const { q, sent, push } = queue(5);
    try {
      push(1);
      q.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      q.checkPendingRequests();
      assert.deepEqual(sent, [1]);
      // kafkajs 2.2.4 set a timer here, of a negative delay, that set the next one: forever.
      assert.equal(q.throttleCheckTimeoutId, null);
    } finally {
      q.destroy();
    }
  });

  it('sends a request held back by the in-flight limit once an answer frees a slot', () => {
    const { q, sent, push } = queue(1);
    try {
      push(1);
      push(2);
      assert.deepEqual(sent, [1]);
      q.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      assert.deepEqual(sent, [1, 2]);
    } finally {
      q.destroy();
    }
  });

  it('waits out a broker throttle before sending what is pending, then goes idle', async () => {
    const { q, sent, push } = queue(5);
    try {
      q.throttledUntil = Date.now() + 150;
      push(1);
      assert.deepEqual(sent, []);
      await sleep(50);
      assert.deepEqual(sent, [], 'sent during the throttle');
      await sleep(250);
      assert.deepEqual(sent, [1]);
      assert.equal(q.throttleCheckTimeoutId, null);
    } finally {
      q.destroy();
    }
  });
});
