import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

export interface OperatorMetrics {
  registry: Registry;
  passes: Counter<'result'>;
}

/**
 * The operator's /metrics: reconcile passes, whether this instance leads, and the Ready state of each
 * Location and rule (`Location/<name>` → ready), read at scrape time.
 */
export function operatorMetrics(state: { leading(): boolean; readiness(): Iterable<[string, boolean]> }): OperatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'backbeat_' });
  const registers = [registry];
  new Gauge({
    name: 'backbeat_operator_leader',
    help: 'Whether this operator instance holds the Lease (1) or waits (0).',
    registers,
    collect() {
      this.set(state.leading() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'backbeat_resource_ready',
    help: 'Whether each Location and ReplicationRule is Ready (1) or not (0), as the leader last decided.',
    labelNames: ['kind', 'name'],
    registers,
    collect() {
      this.reset();
      for (const [id, ok] of state.readiness()) {
        const [kind = '', name = ''] = id.split('/');
        this.set({ kind, name }, ok ? 1 : 0);
      }
    },
  });
  return { registry, passes: new Counter({ name: 'backbeat_operator_reconciles_total', help: 'Reconcile passes, by result.', labelNames: ['result'], registers }) };
}
