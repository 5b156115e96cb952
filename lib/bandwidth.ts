import { Transform } from 'node:stream';

// A token bucket of bytes per second, shared by every stream made from it: what the copies to one
// destination may write together (a Location's spec.limits.bandwidthMiBps).

export class Bandwidth {
  private rate: number;
  private tokens = 0;
  private last = performance.now();
  /** Takers wait in turn, so that one large chunk does not starve and small ones do not jump it. */
  private turn: Promise<void> = Promise.resolve();

  /** `bytesPerSecond` > 0. */
  constructor(bytesPerSecond: number) {
    this.rate = bytesPerSecond;
  }

  get bytesPerSecond(): number {
    return this.rate;
  }

  /** A new rate, from now on (a processor's share after a rebalance). */
  setRate(bytesPerSecond: number): void {
    this.refill();
    this.rate = bytesPerSecond;
  }

  /** Resolves once `bytes` may go. A chunk larger than the bucket goes into debt, which later takers wait out. */
  take(bytes: number): Promise<void> {
    const turn = this.turn.then(async () => {
      this.refill();
      this.tokens -= bytes;
      if (this.tokens < 0) await new Promise((r) => setTimeout(r, (-this.tokens / this.rate) * 1000));
    });
    this.turn = turn;
    return turn;
  }

  /** Bytes through it pass at the bucket's rate, together with every other stream of this bucket. */
  stream(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        this.take(chunk.length).then(() => {
          done(null, chunk);
        }, done);
      },
    });
  }

  private refill(): void {
    const now = performance.now();
    // At most a twentieth of a second's worth (64 KiB at least) saved up: the rate holds over short spans too.
    const burst = Math.max(64 * 1024, this.rate / 20);
    this.tokens = Math.min(burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }
}
