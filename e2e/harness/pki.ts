import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runDir } from './run-dir.ts';

const run = promisify(execFile);

/** A CA made for the run and one server certificate it signed, as PEM files and text. */
export interface TestPki {
  caFile: string;
  ca: string;
  certFile: string;
  keyFile: string;
  /** The key, then the certificate: what a PEM keystore (Kafka's ssl.keystore.type=PEM) reads. */
  keystoreFile: string;
}

/**
 * A CA and a server certificate for `ips` (and localhost), valid two days, made with openssl: no
 * certificate here chains to anything outside the run.
 */
export async function makePki(name: string, ips: string[]): Promise<TestPki> {
  const dir = join(runDir(), `pki-${name}`);
  mkdirSync(dir, { recursive: true });
  const f = (file: string): string => join(dir, file);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', `/CN=backbeat test CA ${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${name}`]);
  writeFileSync(f('server.ext'), `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=${[...ips.map((ip) => `IP:${ip}`), 'DNS:localhost'].join(',')}\n`);
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.crt'), '-days', '2', '-extfile', f('server.ext')]);
  writeFileSync(f('keystore.pem'), readFileSync(f('server.key'), 'utf8') + readFileSync(f('server.crt'), 'utf8'), { mode: 0o600 });
  return { caFile: f('ca.crt'), ca: readFileSync(f('ca.crt'), 'utf8'), certFile: f('server.crt'), keyFile: f('server.key'), keystoreFile: f('keystore.pem') };
}
