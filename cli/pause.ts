import { type ApiServer, callApi } from './api.ts';

/** `--until`: an ISO 8601 time, or a duration from now such as 90s, 15m, 2h, 1d. */
export function untilTime(value: string, now = Date.now()): string {
  const m = /^(\d+)(s|m|h|d)$/.exec(value);
  if (m !== null) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now + Number(m[1]) * unit).toISOString();
  }
  if (Number.isNaN(Date.parse(value))) throw new Error(`--until must be a time (ISO 8601) or a duration like 30m, got "${value}"`);
  return new Date(value).toISOString();
}

/** `backbeat pause` and `backbeat resume`: records the new state; the location's processors follow it. */
export async function setPause(server: ApiServer, location: string, action: 'pause' | 'resume', until?: string): Promise<number> {
  const answer = await callApi(server, `/v1/destinations/${encodeURIComponent(location)}/${action}`, { method: 'POST', body: until !== undefined ? { until } : {} });
  const body = answer.body as { error?: string; paused?: boolean; until?: string };
  if (answer.status !== 200) {
    process.stderr.write(`backbeat: ${body.error ?? `status API answered HTTP ${answer.status}`}\n`);
    return 2;
  }
  process.stdout.write(
    body.paused === true ? `${location}: paused${body.until !== undefined ? ` until ${body.until}` : ''}\n` : `${location}: resumed\n`,
  );
  return 0;
}
