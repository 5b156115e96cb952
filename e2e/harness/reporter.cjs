// Mocha's spec reporter, plus plain closing lines that CI tools read: one per failed test ("failed: title:
// the error's first line"), then "tests: N passed, N failed, N skipped". CI may show only a run's tail.
'use strict';
const Mocha = require('mocha');

class SpecWithTotals extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const failed = [];
    runner.on('fail', (test, err) => {
      const first = String(err?.message ?? err).split('\n')[0].slice(0, 300);
      failed.push(`failed: ${test.fullTitle()}: ${first}`);
    });
    runner.once('end', () => {
      const s = this.stats;
      process.stdout.write(`\n${failed.map((f) => `${f}\n`).join('')}tests: ${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
    });
  }
}

module.exports = SpecWithTotals;
