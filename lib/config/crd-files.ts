import { dump } from 'js-yaml';
import { locationCrd, replicationRuleCrd } from './crds.ts';

const HEADER = '# Generated from lib/config/schema.ts by `make crds`. Do not edit.\n';

/** The CRD files as they are committed: file name → YAML text. */
export function crdFiles(): Map<string, string> {
  return new Map([
    ['backbeat.io_locations.yaml', HEADER + dump(locationCrd(), { lineWidth: 120, noRefs: true })],
    ['backbeat.io_replicationrules.yaml', HEADER + dump(replicationRuleCrd(), { lineWidth: 120, noRefs: true })],
  ]);
}
