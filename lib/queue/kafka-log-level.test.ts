import assert from 'node:assert/strict';
import { logLevel } from 'kafkajs';
import { kafkaLogLevel } from './kafka.ts';

describe('kafkajs log lines', () => {
  it('are debug when a response carries an error kafkajs retries by itself, and keep their level otherwise', () => {
    const response = (error: string): { message: string; error: string } => ({ message: 'Response GroupCoordinator(key: 10, version: 2)', error });
    assert.equal(kafkaLogLevel(logLevel.ERROR, response('The group coordinator is not available')), 'debug');
    assert.equal(kafkaLogLevel(logLevel.ERROR, response('The coordinator is loading and hence can\'t process requests for this group')), 'debug');
    assert.equal(kafkaLogLevel(logLevel.ERROR, response('The group is rebalancing, so a rejoin is needed')), 'debug');
    assert.equal(kafkaLogLevel(logLevel.ERROR, response('Not authorized to access group: Group authorization failed')), 'error', 'an error no retry fixes stays an error');
    assert.equal(kafkaLogLevel(logLevel.ERROR, { message: 'Crash: KafkaJSNumberOfRetriesExceeded' }), 'error');
    assert.equal(kafkaLogLevel(logLevel.WARN, { message: 'The group is rebalancing, re-joining' }), 'warn');
  });
});
