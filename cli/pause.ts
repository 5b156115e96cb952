import { type ApiServer, callApi, type Output, printJson, refused } from './api.ts';

/** A duration such as 90s, 15m, 2h, 1d, in ms; undefined for anything else. */
export function durationMs(value: string): number | undefined {
  const m = /^(\d+)(s|m|h|d)$/.exec(value);
  if (m === null) return undefined;
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

/** `--until`: an ISO 8601 time, or a duration from now such as 90s, 15m, 2h, 1d. */
export function untilTime(value: string, now = Date.now()): string {
  const ms = durationMs(value);
  if (ms !== undefined) return new Date(now + ms).toISOString();
  if (Number.isNaN(Date.parse(value))) throw new Error(`--until must be a time (ISO 8601) or a duration like 30m, got "${value}"`);
  return new Date(value).toISOString();
}

/** `backbeat pause` and `backbeat resume`: records the new state; the location's processors follow it. */
export async function setPause(server: ApiServer, location: string, action: 'pause' | 'resume', until: string | undefined, output: Output): Promise<number> {
  const answer = await callApi(server, `/v1/destinations/${encodeURIComponent(location)}/${action}`, { method: 'POST', body: until !== undefined ? { until } : {} });
  const body = answer.body as { paused?: boolean; until?: string };
  if (answer.status !== 200) return refused(answer);
  if (output === 'json') printJson(body);
  else process.stdout.write(
    body.paused === true ? `${location}: paused${body.until !== undefined ? ` until ${body.until}` : ''}\n` : `${location}: resumed\n`,
  );
  return 0;
}
