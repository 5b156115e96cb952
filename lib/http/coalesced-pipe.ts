import type { Readable, Writable } from 'node:stream';

// A large request body streamed from another answer (a GET into a PUT or a part upload) arrives in
// reads of 16-64 KiB. Piped as it is, each read is one write syscall and one pass through the HTTP and
// stream layers. Corked until COALESCE_BYTES are held, the writes go out as one writev each: copying
// 6 × 64 MiB objects, write syscalls went from about 11 500 to 2 300 and the CPU per object down by
// 10-15 % (`make bench`, see docs/benchmarks.md).

export const COALESCE_BYTES = 1024 * 1024;

// Each read of an HTTP answer is a buffer of its own, outside V8's heap, which only a collection frees:
// between two, a copy's memory kept growing into fresh pages. Once the socket has taken a read nothing
// needs it, so it is freed then (detached), and the next reads reuse its memory. Copying 6 × 64 MiB:
// a third fewer page faults and 10-15 % less CPU; 3 × 1 GiB: a fifth less CPU and peak RSS
// (docs/benchmarks.md).

/** Reads smaller than this are left to the collector (a slice of Node's buffer pool is smaller). */
const RELEASE_MIN_BYTES = 16 * 1024;

/** Frees `chunk`'s memory now, where `chunk` is the whole of its own ArrayBuffer (never a slice of a shared one). */
function release(chunk: Buffer): void {
  const ab = chunk.buffer;
  if (chunk.byteOffset !== 0 || chunk.byteLength !== ab.byteLength || ab.byteLength < RELEASE_MIN_BYTES || !(ab instanceof ArrayBuffer)) return;
  try {
    ab.transfer(0);
  } catch {
    // Not detachable (held by the runtime): the collector frees it.
  }
}

/**
 * Pipes a body of `length` bytes into `out`: coalesced when over COALESCE_BYTES, as it is otherwise (one
 * hold would save little). `owned`: the body's chunks are read for this pipe alone (an HTTP answer's,
 * through transforms that keep none), so each is freed once `out` has written it.
 */
export function pipeBody(body: Readable, out: Writable, length: number, owned = false): void {
  if (length > COALESCE_BYTES) pipeCoalesced(body, out, owned);
  else body.pipe(out);
}

/**
 * Pipes `body` into `out` as `body.pipe(out)` does (backpressure; `out` ended at the body's end; a
 * destination closed stops the reading, the body left to its owner), written COALESCE_BYTES at a time;
 * `owned` as for pipeBody.
 */
export function pipeCoalesced(body: Readable, out: Writable, owned = false): void {
  let held = 0;
  const flush = (): void => {
    if (held === 0) return;
    held = 0;
    out.uncork();
  };
  const onData = (chunk: Buffer): void => {
    if (held === 0) out.cork();
    held += chunk.length;
    if (owned) out.write(chunk, () => release(chunk));
    else out.write(chunk);
    if (held < COALESCE_BYTES) return;
    flush();
    // What the socket did not take yet waits for its drain, as pipe would.
    if (out.writableNeedDrain) body.pause();
  };
  const onDrain = (): void => {
    body.resume();
  };
  const onEnd = (): void => {
    flush();
    out.end();
  };
  const onClose = (): void => {
    body.off('data', onData);
    body.off('end', onEnd);
    out.off('drain', onDrain);
    body.pause();
  };
  body.on('data', onData);
  body.once('end', onEnd);
  out.on('drain', onDrain);
  out.once('close', onClose);
}
