import type { TSchema } from '@sinclair/typebox';
import { API_GROUP, LocationSpec, LocationStatus, ReplicationRuleSpec, ReplicationRuleStatus } from './schema.ts';

// CustomResourceDefinitions generated from the same schemas local mode validates with (schema.ts), so
// the API server refuses at `kubectl apply` what `backbeat validate` refuses. `make crds` writes them to
// crds/ and the chart; a test checks that the committed files are current.

type Json = Record<string, unknown>;

/**
 * A TypeBox JSON Schema as a Kubernetes structural schema: `const` and unions of constants become enums,
 * records become additionalProperties, fields with a default are not required, and keywords the API
 * server does not take are dropped.
 */
export function structural(schema: TSchema | Json): Json {
  const s = JSON.parse(JSON.stringify(schema)) as Json;
  const out: Json = {};
  const anyOf = s['anyOf'] as Json[] | undefined;
  if (anyOf !== undefined && anyOf.every((b) => 'const' in b)) {
    out['type'] = anyOf[0]?.['type'] ?? 'string';
    out['enum'] = anyOf.map((b) => b['const']);
  }
  for (const [k, v] of Object.entries(s)) {
    switch (k) {
      case 'anyOf':
      case '$id':
      case 'contentEncoding':
        break;
      case 'const':
        out['enum'] = [v];
        break;
      case 'properties':
        out['properties'] = Object.fromEntries(Object.entries(v as Record<string, Json>).map(([name, p]) => [name, structural(p)]));
        break;
      case 'patternProperties':
        out['additionalProperties'] = structural(Object.values(v as Record<string, Json>)[0] ?? {});
        break;
      case 'items':
        out['items'] = structural(v as Json);
        break;
      case 'additionalProperties':
        // Unknown fields are pruned, and refused under kubectl's strict field validation; a structural
        // schema cannot combine additionalProperties with properties.
        if (typeof v === 'object') out['additionalProperties'] = structural(v as Json);
        break;
      case 'required': {
        // A field with a default is filled in by the API server: not for the user to give.
        const properties = (s['properties'] ?? {}) as Record<string, Json>;
        const needed = (v as string[]).filter((name) => properties[name]?.['default'] === undefined);
        if (needed.length > 0) out['required'] = needed;
        break;
      }
      default:
        out[k] = v;
    }
  }
  return out;
}

const ready = '.status.conditions[?(@.type=="Ready")]';
const readyColumns = [
  { name: 'Ready', type: 'string', jsonPath: `${ready}.status` },
  { name: 'Reason', type: 'string', jsonPath: `${ready}.reason` },
];
const ageColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };
/** Shown by `kubectl get -o wide`: what the Ready condition says. */
const messageColumn = { name: 'Message', type: 'string', jsonPath: `${ready}.message`, priority: 1 };

function crd(kind: string, plural: string, spec: TSchema, status: TSchema, columns: Json[], shortNames: string[]): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${API_GROUP}` },
    spec: {
      group: API_GROUP,
      scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List`, shortNames, categories: ['backbeat'] },
      versions: [
        {
          name: 'v1alpha1',
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: columns,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              required: ['spec'],
              properties: { spec: structural(spec), status: structural(status) },
            },
          },
        },
      ],
    },
  };
}

export function locationCrd(): Json {
  return crd(
    'Location',
    'locations',
    LocationSpec,
    LocationStatus,
    [...readyColumns, { name: 'Type', type: 'string', jsonPath: '.spec.type' }, { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint' }, { name: 'Transient', type: 'boolean', jsonPath: '.spec.transient' }, ageColumn, messageColumn],
    ['bbloc'],
  );
}

export function replicationRuleCrd(): Json {
  return crd(
    'ReplicationRule',
    'replicationrules',
    ReplicationRuleSpec,
    ReplicationRuleStatus,
    [
      ...readyColumns,
      { name: 'Source', type: 'string', jsonPath: '.status.source' },
      { name: 'Destinations', type: 'string', jsonPath: '.status.targets' },
      { name: 'Pending', type: 'integer', jsonPath: '.status.pending' },
      { name: 'Failed', type: 'integer', jsonPath: '.status.failed' },
      { name: 'Lag', type: 'integer', jsonPath: '.status.lag' },
      ageColumn,
      { name: 'Replicated', type: 'integer', jsonPath: '.status.replicated', priority: 1 },
      messageColumn,
    ],
    ['bbrule'],
  );
}
