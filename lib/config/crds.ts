import type { TSchema } from '@sinclair/typebox';
import { API_GROUP, LocationSpec, ReplicationRuleSpec } from './schema.ts';

// CustomResourceDefinitions generated from the same schemas local mode validates with (schema.ts), so
// the API server refuses at `kubectl apply` what `backbeat validate` refuses. `make crds` writes them to
// crds/ and the chart; a test checks that the committed files are current.

type Json = Record<string, unknown>;

/**
 * A TypeBox JSON Schema as a Kubernetes structural schema: `const` and unions of constants become enums,
 * records become additionalProperties, and keywords the API server does not take are dropped.
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
      default:
        out[k] = v;
    }
  }
  return out;
}

const readyColumn = { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' };
const ageColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

/** Status is written by the operator only (status subresource); its shape is the operator's. */
const statusSchema = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };

function crd(kind: string, plural: string, spec: TSchema, columns: Json[], shortNames: string[]): Json {
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
              properties: { spec: structural(spec), status: statusSchema },
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
    [readyColumn, { name: 'Endpoint', type: 'string', jsonPath: '.spec.endpoint' }, { name: 'Transient', type: 'boolean', jsonPath: '.spec.transient' }, ageColumn],
    ['bbloc'],
  );
}

export function replicationRuleCrd(): Json {
  return crd(
    'ReplicationRule',
    'replicationrules',
    ReplicationRuleSpec,
    [
      readyColumn,
      { name: 'Source', type: 'string', jsonPath: '.spec.source.bucket' },
      { name: 'Destinations', type: 'string', jsonPath: '.spec.destinations[*].bucket' },
      { name: 'Replicated', type: 'integer', jsonPath: '.status.replicated' },
      { name: 'Pending', type: 'integer', jsonPath: '.status.pending' },
      { name: 'Failed', type: 'integer', jsonPath: '.status.failed' },
      ageColumn,
    ],
    ['bbrule'],
  );
}
