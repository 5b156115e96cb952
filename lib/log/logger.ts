import winston from 'winston';
import { redact } from './redact.ts';

export type Logger = winston.Logger;

export interface LoggerOptions {
  /** The role or component name, carried on every line. */
  component: string;
  level?: string;
  /** Where lines go; stdout by default. Tests pass their own stream. */
  stream?: NodeJS.WritableStream;
}

// Winston keeps its bookkeeping under symbol keys (level, message, splat); copy them across untouched.
const redactFormat = winston.format((info) => {
  const clean = redact({ ...info }) as winston.Logform.TransformableInfo;
  for (const sym of Object.getOwnPropertySymbols(info)) {
    (clean as unknown as Record<symbol, unknown>)[sym] = (info as unknown as Record<symbol, unknown>)[sym];
  }
  return clean;
});

/** A structured JSON logger whose every line has passed through secret redaction. */
export function createLogger(options: LoggerOptions): Logger {
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console();
  return winston.createLogger({
    level: options.level ?? process.env['BACKBEAT_LOG_LEVEL'] ?? 'info',
    defaultMeta: { component: options.component },
    format: winston.format.combine(
      winston.format.errors({ stack: true }),
      winston.format.timestamp(),
      redactFormat(),
      winston.format.json(),
    ),
    transports: [transport],
  });
}
