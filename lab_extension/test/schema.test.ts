/**
 * The TypeScript models against the backend's OpenAPI schema. The pytest
 * wrapper (tests/lab_extension/test_frontend.py) dumps the schema of a real
 * backend and passes its path in AIAAS_OPENAPI.
 */
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { DEPLOYMENT_STATUSES, MODEL_FIELDS, RUN_STATUSES } from '../src/models';

const path = process.env.AIAAS_OPENAPI;

type Schema = { properties?: Record<string, Schema>; enum?: string[] };

describe.skipIf(!path)('models match the backend OpenAPI schema (run through pytest)', () => {
  const schemas = (): Record<string, Schema> =>
    JSON.parse(readFileSync(path!, 'utf8')).components.schemas as Record<string, Schema>;

  it.each(Object.entries(MODEL_FIELDS))('%s has every field the panel reads', (model, fields) => {
    const schema = schemas()[model];
    expect(schema, `no ${model} in the OpenAPI schema`).toBeDefined();
    const missing = fields.filter(f => !(f in (schema.properties ?? {})));
    expect(missing, `${model} fields the backend does not have`).toEqual([]);
  });

  it('run statuses are the backend enum', () => {
    expect([...RUN_STATUSES].sort()).toEqual([...(schemas().RunStatus.enum ?? [])].sort());
  });

  it('deployment statuses are the backend enum', () => {
    const status = schemas().DeploymentPublic.properties?.status;
    expect([...DEPLOYMENT_STATUSES].sort()).toEqual([...(status?.enum ?? [])].sort());
  });
});
