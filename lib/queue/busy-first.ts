import { createRequire } from 'node:module';
import type { PartitionAssigner } from 'kafkajs';
import { tpKey, type TopicPartition } from './queue.ts';

// kafkajs' serialisers are not among the named exports Node finds in its CommonJS: taken from require.
const { AssignerProtocol } = createRequire(import.meta.url)('kafkajs') as typeof import('kafkajs');

export const BUSY_FIRST = 'BackbeatBusyFirst';

/**
 * Who gets which partition: each partition a member still has work in flight on stays with it (the first
 * member, by id, that claims it), and the others go one by one to the member holding the fewest. kafkajs
 * only rebalances eagerly (every partition is given up at each join), so without this a copy still
 * running would meet its partition's next owner redoing it.
 */
export function assignBusyFirst(partitions: TopicPartition[], members: { id: string; busy: TopicPartition[] }[]): Map<string, TopicPartition[]> {
  const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out = new Map<string, TopicPartition[]>(sorted.map((m) => [m.id, []]));
  const exists = new Set(partitions.map(tpKey));
  const owner = new Map<string, string>();
  for (const m of sorted) {
    for (const tp of m.busy) {
      if (!exists.has(tpKey(tp)) || owner.has(tpKey(tp))) continue;
      owner.set(tpKey(tp), m.id);
      out.get(m.id)?.push(tp);
    }
  }
  for (const tp of partitions) {
    if (owner.has(tpKey(tp))) continue;
    const least = sorted.reduce<string | undefined>((best, m) => (best === undefined || (out.get(m.id)?.length ?? 0) < (out.get(best)?.length ?? 0) ? m.id : best), undefined);
    if (least !== undefined) out.get(least)?.push(tp);
  }
  return out;
}

function decodeBusy(userData: Buffer | undefined): TopicPartition[] {
  try {
    const parsed: unknown = JSON.parse(userData?.toString('utf8') || '[]');
    return Array.isArray(parsed) ? parsed.filter((x): x is TopicPartition => typeof (x as TopicPartition).topic === 'string' && Number.isInteger((x as TopicPartition).partition)) : [];
  } catch {
    return [];
  }
}

/** The kafkajs assigner of assignBusyFirst; each member sends the partitions `busy()` names when it joins. */
export function busyFirstAssigner(busy: () => TopicPartition[]): PartitionAssigner {
  return ({ cluster }) => ({
    name: BUSY_FIRST,
    version: 1,
    protocol: ({ topics }) => ({
      name: BUSY_FIRST,
      metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: Buffer.from(JSON.stringify(busy())) }),
    }),
    assign: ({ members, topics }) => {
      const partitions = topics.flatMap((topic) => cluster.findTopicPartitionMetadata(topic).map((m) => ({ topic, partition: m.partitionId })));
      const claims = members.map((m) => ({ id: m.memberId, busy: decodeBusy(AssignerProtocol.MemberMetadata.decode(m.memberMetadata)?.userData) }));
      const assigned = assignBusyFirst(partitions, claims);
      return Promise.resolve(
        [...assigned].map(([memberId, tps]) => {
          const assignment: Record<string, number[]> = {};
          for (const tp of tps) (assignment[tp.topic] ??= []).push(tp.partition);
          return { memberId, memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 1, assignment, userData: Buffer.alloc(0) }) };
        }),
      );
    },
  });
}
