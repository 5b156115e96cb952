/** A call to the status API of a running `backbeat run`; answers the parsed JSON body and the HTTP status. */
export async function callApi(server: string, path: string, init?: { method: 'POST'; body: unknown }): Promise<{ status: number; body: unknown }> {
  let res: Response;
  try {
    res = await fetch(`${server.replace(/\/$/, '')}${path}`, init === undefined ? undefined : { method: init.method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(init.body) });
  } catch (err) {
    throw new Error(`cannot reach the status API at ${server} (is \`backbeat run\` running?): ${(err as Error).message}`, { cause: err });
  }
  return { status: res.status, body: await res.json() };
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}
