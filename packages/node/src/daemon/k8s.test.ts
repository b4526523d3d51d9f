/**
 * The Kubernetes manifests in deploy/k8s, checked against the Kubernetes API schemas (the
 * `kubernetes-models` package: the OpenAPI schemas of the API, compiled) and against this code:
 * every XPMESH_* variable they set is a real setting, the membership name is the headless Service,
 * the probes hit /healthz on the admin port, the secrets they reference exist. No cluster runs
 * here (docs/deployment.md); the schemas are open (unknown fields pass, as in the API's OpenAPI
 * document), so types, required fields and enums are what they prove.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { parseAllDocuments } from 'yaml';
import { CONFIG_SETTINGS } from './config.js';
import { parseDnsConnect } from './discover.js';

const DIR = fileURLToPath(new URL('../../../../deploy/k8s/', import.meta.url));

// biome-ignore lint/suspicious/noExplicitAny: manifests are plain data
type Obj = any;
const MODELS: Record<string, new (o: Obj) => { validate(): void }> = {
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
  'v1/Secret': Secret,
  'v1/Service': Service,
};

function load(): Obj[] {
  const out: Obj[] = [];
  for (const f of readdirSync(DIR).filter((x) => x.endsWith('.yaml') && x !== 'kustomization.yaml'))
    for (const d of parseAllDocuments(readFileSync(join(DIR, f), 'utf8'))) {
      assert.equal(d.errors.length, 0, `${f}: ${d.errors.join('; ')}`);
      out.push({ file: f, obj: d.toJS() });
    }
  return out;
}

describe('Kubernetes manifests (deploy/k8s)', () => {
  const docs = load();
  const byKind = (k: string) => docs.filter((d) => d.obj.kind === k).map((d) => d.obj);

  it('every object validates against the Kubernetes API schema', () => {
    assert.ok(docs.length >= 4);
    for (const { file, obj } of docs) {
      const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
      assert.ok(Model, `${file}: no schema checked for ${obj.apiVersion} ${obj.kind}`);
      assert.doesNotThrow(() => new Model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata?.name}`);
    }
  });

  it('the schema check can fail: a wrong type and a missing required field are rejected', () => {
    const sts = structuredClone(byKind('StatefulSet')[0]);
    sts.spec.replicas = 'three';
    assert.throws(() => new StatefulSet(sts).validate(), /replicas/);
    const svc = structuredClone(byKind('Service')[0]);
    svc.spec.ports[0].port = 'peer';
    assert.throws(() => new Service(svc).validate(), /port/);
    const job = structuredClone(byKind('Job')[0]);
    delete job.spec.template.spec.containers;
    assert.throws(() => new Job(job).validate(), /containers/);
  });

  it('kustomization lists the cluster objects', () => {
    const k = parseAllDocuments(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))[0].toJS();
    assert.deepEqual([...k.resources].sort(), ['secret.yaml', 'service.yaml', 'statefulset.yaml']);
  });

  it('the manifests agree with each other and with the code', () => {
    const [svc] = byKind('Service');
    const [sts] = byKind('StatefulSet');
    const [secret] = byKind('Secret');
    const [job] = byKind('Job');
    assert.equal(svc.spec.clusterIP, 'None', 'headless: the name resolves to every pod');
    assert.equal(sts.spec.serviceName, svc.metadata.name);
    assert.deepEqual(svc.spec.selector, sts.spec.template.metadata.labels);
    const port = (name: string) => svc.spec.ports.find((p: Obj) => p.name === name).port;
    const c = sts.spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: Obj) => [e.name, e]));
    const settings = new Set(CONFIG_SETTINGS.map((s) => s.env));
    for (const name of Object.keys(env)) assert.ok(settings.has(name), `${name} is not an xpmesh setting`);
    assert.equal(env.XPMESH_PEERS_DNS.value, `${svc.metadata.name}:${port('peer')}`);
    assert.equal(env.XPMESH_NODE_ID.valueFrom.fieldRef.fieldPath, 'metadata.name', 'node id = pod name');
    for (const probe of [c.readinessProbe, c.livenessProbe]) {
      assert.equal(probe.httpGet.path, '/healthz');
      assert.equal(probe.httpGet.port, 'admin');
    }
    const keys = Object.keys(secret.stringData);
    for (const e of [...c.env, ...job.spec.template.spec.containers[0].env])
      if (e.valueFrom?.secretKeyRef) {
        assert.equal(e.valueFrom.secretKeyRef.name, secret.metadata.name);
        assert.ok(keys.includes(e.valueFrom.secretKeyRef.key));
      }
    const args: string[] = job.spec.template.spec.containers[0].args;
    const dns = parseDnsConnect(args[args.indexOf('--connect') + 1]);
    assert.deepEqual(dns, { name: svc.metadata.name, port: port('admin') });
    assert.ok(
      Number(env.XPMESH_SHUTDOWN_MS.value) < sts.spec.template.spec.terminationGracePeriodSeconds * 1000,
      'an instance leaves before the kubelet kills it',
    );
  });
});
