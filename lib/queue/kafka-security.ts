import type { KafkaConfig } from 'kafkajs';
import { readSecretFile } from '../config/secret-file.ts';

export const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/** How the clients reach the brokers: TLS, SASL, or both (SASL_SSL). Plaintext when empty. */
export interface KafkaSecurity {
  /** TLS to the brokers, verified against `ca` (PEM, one or more certificates) or else the system's CAs. */
  tls?: { ca?: string };
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
}

/** Where the settings come from: flags or their environment variables (see cli/serve.ts), files read here. */
export interface KafkaSecuritySettings {
  tls?: boolean;
  caFile?: string;
  saslMechanism?: string;
  saslUsername?: string;
  saslPasswordFile?: string;
}

export class KafkaSecurityError extends Error {
  override name = 'KafkaSecurityError';
}

function nonEmpty(file: string, what: string): string {
  const value = readSecretFile(file, what);
  if (value === '') throw new KafkaSecurityError(`${what} ${file} is empty`);
  return value;
}

/** The settings checked and their files read; a clear error for a setting that makes no sense. */
export function kafkaSecurity(s: KafkaSecuritySettings): KafkaSecurity {
  const security: KafkaSecurity = {};
  if (s.caFile !== undefined && s.tls !== true) throw new KafkaSecurityError('--kafka-ca-file is for TLS: give --kafka-tls too');
  if (s.tls === true) {
    const ca = s.caFile !== undefined ? nonEmpty(s.caFile, 'the Kafka CA file') : undefined;
    if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) throw new KafkaSecurityError(`the Kafka CA file ${s.caFile ?? ''} holds no PEM certificate`);
    security.tls = ca !== undefined ? { ca } : {};
  }
  const saslGiven = [s.saslMechanism, s.saslUsername, s.saslPasswordFile].filter((v) => v !== undefined).length;
  if (saslGiven > 0) {
    const mechanism = s.saslMechanism;
    if (mechanism === undefined || !(SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
      throw new KafkaSecurityError(`--kafka-sasl-mechanism must be one of ${SASL_MECHANISMS.join(', ')}, got "${mechanism ?? ''}"`);
    }
    if (s.saslUsername === undefined || s.saslUsername === '') throw new KafkaSecurityError('SASL needs --kafka-sasl-username');
    if (s.saslPasswordFile === undefined) throw new KafkaSecurityError('SASL needs --kafka-sasl-password-file');
    // PLAIN sends the password itself: only inside TLS.
    if (mechanism === 'plain' && security.tls === undefined) throw new KafkaSecurityError('SASL PLAIN sends the password in clear: give --kafka-tls too, or use scram-sha-512');
    security.sasl = { mechanism: mechanism as SaslMechanism, username: s.saslUsername, password: nonEmpty(s.saslPasswordFile, 'the Kafka password file') };
  }
  return security;
}

/** The kafkajs settings of `security`. */
export function kafkajsSecurity(security: KafkaSecurity | undefined): Pick<KafkaConfig, 'ssl' | 'sasl'> {
  const out: Pick<KafkaConfig, 'ssl' | 'sasl'> = {};
  if (security?.tls !== undefined) out.ssl = security.tls.ca !== undefined ? { ca: [security.tls.ca] } : true;
  const sasl = security?.sasl;
  if (sasl !== undefined) {
    // kafkajs types each mechanism apart; the three share their shape.
    out.sasl = { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } as NonNullable<KafkaConfig['sasl']>;
  }
  return out;
}
