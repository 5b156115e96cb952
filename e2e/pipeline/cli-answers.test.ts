import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serviceHost } from '../harness/net.ts';
import { backbeat } from './backbeat.ts';

// What the CLI says when --server is not the status API: a proxy's error page, another service.
describe('backbeat CLI against a server that is not the status API (real process)', function () {
  this.timeout(30_000);

  it('names the answer it got and the flag to check, not a JSON parse error', async () => {
    const page = createServer((_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body>Bad Gateway</body></html>'));
    page.listen(0, serviceHost);
    await once(page, 'listening');
    const url = `http://${serviceHost}:${String((page.address() as AddressInfo).port)}`;
    try {
      await assert.rejects(backbeat('status', 'a/b/c', '--server', url), (err: Error & { stderr?: string; code?: number }) => {
        assert.match(err.stderr ?? '', /answered HTTP 502 with text\/html, not the status API's JSON: is --server the status API's address\?/);
        assert.doesNotMatch(err.stderr ?? '', /Unexpected token/);
        assert.notEqual(err.code, 0);
        return true;
      });
    } finally {
      page.close();
    }
  });
});
