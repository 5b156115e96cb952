/**
 * Runs `work` on every item, at most `limit` at a time, and resolves once every item is done. A failure
 * does not stop the others; the first one is thrown at the end.
 */
export async function forEachLimit<T>(items: Iterable<T>, limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const list = [...items];
  let next = 0;
  const errors: unknown[] = [];
  const runner = async (): Promise<void> => {
    while (next < list.length) {
      const item = list[next++] as T;
      try {
        await work(item);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, list.length)) }, runner));
  if (errors.length > 0) throw errors[0];
}
