import { type ApiServer, callApi, type Output, printJson, refused } from './api.ts';
import { EXIT } from './exit.ts';

interface RuleFigures {
  rule: string;
  source: string;
  destinations: { destination: string; replicated: number; pending: number; failed: number }[];
  /** Status events not counted yet: the figures are final only once this is 0. */
  unfolded: number;
}

export interface BackfillRequest {
  server: ApiServer;
  rule: string;
  output: Output;
  /** Follow the rule until nothing is pending, for at most this long (ms). */
  waitMs?: number;
  /** Between two readings of the figures (ms). */
  intervalMs?: number;
}

const sum = (f: RuleFigures, field: 'replicated' | 'pending' | 'failed'): number => f.destinations.reduce((n, d) => n + d[field], 0);
const line = (f: RuleFigures): string => `rule ${f.rule}: replicated ${String(sum(f, 'replicated'))}, pending ${String(sum(f, 'pending'))}, failed ${String(sum(f, 'failed'))}${f.unfolded > 0 ? ` (${String(f.unfolded)} status events being counted)` : ''}`;

/**
 * `backbeat backfill`: queues the rule's existing objects; with a wait, then shows the rule's figures
 * (over every destination) until nothing is pending and every status event is counted. A progress line
 * goes to stderr (rewritten in place on a terminal); stdout gets the result. Exits 1 when versions of
 * the rule are left FAILED, or when the wait ran out first.
 */
export async function backfill(q: BackfillRequest): Promise<number> {
  const answer = await callApi(q.server, `/v1/rules/${encodeURIComponent(q.rule)}/backfill`, { method: 'POST', body: {} });
  const queued = (answer.body as { queued?: number }).queued;
  if (answer.status !== 200 || queued === undefined) return refused(answer);
  if (q.waitMs === undefined) {
    if (q.output === 'json') printJson(answer.body);
    else process.stdout.write(`rule ${q.rule}: queued ${String(queued)} object versions\n`);
    return EXIT.ok;
  }
  process.stderr.write(`rule ${q.rule}: queued ${String(queued)} object versions; waiting until none is pending\n`);
  const deadline = Date.now() + q.waitMs;
  const tty = process.stderr.isTTY;
  let lastShown = 0;
  for (;;) {
    const read = await callApi(q.server, `/v1/rules/${encodeURIComponent(q.rule)}`);
    if (read.status !== 200) return refused(read);
    const figures = read.body as RuleFigures;
    const done = figures.unfolded === 0 && sum(figures, 'pending') === 0;
    const timedOut = !done && Date.now() >= deadline;
    // On a terminal the line is rewritten each time; in a log, one line every 10 s and the last.
    if (tty) process.stderr.write(`\r\x1b[K${line(figures)}${done || timedOut ? '\n' : ''}`);
    else if (done || timedOut || Date.now() - lastShown >= 10_000) {
      process.stderr.write(`${line(figures)}\n`);
      lastShown = Date.now();
    }
    if (done || timedOut) {
      if (q.output === 'json') printJson({ ...figures, queued, done });
      else process.stdout.write(`${line(figures)}${done ? '' : ': still pending when the wait ran out'}\n`);
      const failed = sum(figures, 'failed');
      if (failed > 0) process.stderr.write(`backbeat: ${String(failed)} versions of rule ${q.rule} failed: see backbeat failed list\n`);
      return done && failed === 0 ? EXIT.ok : EXIT.failure;
    }
    await new Promise((r) => setTimeout(r, Math.min(q.intervalMs ?? 1_000, Math.max(0, deadline - Date.now()))));
  }
}
