import assert from 'node:assert/strict';
import { demoOperator } from '../../scripts/demo-operator.ts';

// `make demo-operator` (the script's own function): helm install, kubectl apply of examples/, three objects
// written, and the rule's replicated figure reaching 3 (the function waits for it, or throws).

describe('make demo-operator', function () {
  this.timeout(300_000);

  it('replicates the three objects it writes and shows them in kubectl get replicationrules', async () => {
    const lines: string[] = [];
    const keys = await demoOperator((line = '') => lines.push(line));
    assert.deepEqual([...keys].sort(), ['cats/1.jpg', 'dogs/2.jpg', 'notes.txt']);
    const table = lines.find((l) => l.includes('REPLICATED')) ?? '';
    assert.match(table, /\n\s*photos\s+True\s+Replicating\s+site-a\/photos\s+site-b\/photos-replica\s+0\s+0\s+0\s+\S+\s+3\s/, table);
  });
});
