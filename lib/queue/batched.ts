interface Call<T, R> {
  item: T;
  resolve(answer: R): void;
  reject(err: unknown): void;
}

/**
 * Group commit: a call while none is under way runs at once; calls made meanwhile wait for it, then run
 * together, in the order made, in one `run`. So an idle caller waits for nothing, and a busy one makes one
 * request for many. `run` answers each item, in order; a failed run fails every call it carried.
 */
export function batched<T, R>(run: (items: T[]) => Promise<R[]>): (item: T) => Promise<R> {
  let waiting: Call<T, R>[] = [];
  let running = false;
  const flush = async (): Promise<void> => {
    running = true;
    while (waiting.length > 0) {
      const now = waiting;
      waiting = [];
      try {
        const answers = await run(now.map((c) => c.item));
        now.forEach((c, i) => c.resolve(answers[i] as R));
      } catch (err) {
        for (const c of now) c.reject(err);
      }
    }
    running = false;
  };
  return (item) =>
    new Promise<R>((resolve, reject) => {
      waiting.push({ item, resolve, reject });
      if (!running) void flush();
    });
}
