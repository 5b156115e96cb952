import type { Processor } from '../processor/processor.ts';
import { buildProcessor, type ProcessorSettings, type RoleBase } from '../worker/build.ts';

/** Local mode's processors, one per destination location, started (in the main thread or a worker thread). */
export async function startProcessors(base: RoleBase, locations: string[], options: Omit<ProcessorSettings, 'unknownRuleWaitMs'>): Promise<Map<string, Processor>> {
  const processors = new Map<string, Processor>();
  for (const location of locations) {
    // Every role of local mode reads the same rules: a task none of them names is not from a newer config.
    const p = buildProcessor(base, location, { ...options, unknownRuleWaitMs: 0 });
    await p.start();
    processors.set(location, p);
  }
  return processors;
}
