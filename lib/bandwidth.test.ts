import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Bandwidth } from './bandwidth.ts';
import { Limiter } from './queue/ordered.ts';

// The two halves of a Location's spec.limits, each alone: a byte rate shared by streams, and a number of
// copies in flight that can change with a processor's share of the partitions.

const MIB = 2 ** 20;

async function pass(bandwidth: Bandwidth, bytes: number): Promise<void> {
  const chunks = Array.from({ length: bytes / (64 * 1024) }, () => Buffer.alloc(64 * 1024));
  await pipeline(Readable.from(chunks), bandwidth.stream(), new Writable({ write: (_c, _e, done) => done() }));
}

describe('bandwidth and concurrency limits', () => {
  it('lets streams together through at the rate, no faster, and follows a new rate', async () => {
    const bandwidth = new Bandwidth(8 * MIB);
    let started = performance.now();
    // Two streams of 2 MiB share 8 MiB/s: 4 MiB take half a second at least (less one bucket of 0.4 MiB).
    await Promise.all([pass(bandwidth, 2 * MIB), pass(bandwidth, 2 * MIB)]);
    assert.ok(performance.now() - started >= 440, `${String(performance.now() - started)} ms`);
    bandwidth.setRate(32 * MIB);
    started = performance.now();
    await pass(bandwidth, 4 * MIB);
    const fast = performance.now() - started;
    assert.ok(fast >= 110, `${String(fast)} ms`);
  });

  it('lets more copies in at once when its limit grows, and fewer as copies end when it shrinks', async () => {
    const limiter = new Limiter(1);
    await limiter.acquire();
    let second = false;
    const waiting = limiter.acquire().then(() => (second = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(second, false);
    limiter.resize(2);
    await waiting;
    assert.equal(limiter.inFlight, 2);
    limiter.resize(1);
    let third = false;
    const later = limiter.acquire().then(() => (third = true));
    limiter.release();
    await new Promise((r) => setImmediate(r));
    assert.equal(third, false, 'one copy still runs: at the new limit, nobody else starts');
    limiter.release();
    await later;
    assert.equal(limiter.inFlight, 1);
    assert.throws(() => limiter.resize(0), /positive integer/);
  });
});
