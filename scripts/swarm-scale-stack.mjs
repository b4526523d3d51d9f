#!/usr/bin/env node
// Writes a scaled copy of deploy/swarm/stack.yml for the 16-instance figure run: N node replicas
// spread freely over the hosts (no one-per-host limit), smaller memory, a rarer health check, no
// demo, and the load one-shot driving every instance with one process each.
//   node scripts/swarm-scale-stack.mjs 16 > /tmp/scale-stack.yml
//   mkdir -p /tmp/scale && chmod 777 /tmp/scale
//   XPMESH_REPORTS=/tmp/scale E2E_IMAGE=xpmesh:local E2E_TIMEOUT=600 E2E_LOGS=load \
//     bash ../shared/tools/swarm-e2e.sh . /tmp/scale-stack.yml load
//   node scripts/deployment-doc.mjs --scale /tmp/scale/load.json --scale-meta "..."
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';

const n = Number(process.argv[2] ?? 16);
const root = new URL('..', import.meta.url).pathname;
const stack = parse(readFileSync(`${root}deploy/swarm/stack.yml`, 'utf8'), { merge: true });
const s = stack.services;
s.node.deploy.replicas = n;
delete s.node.deploy.placement;
s.node.environment.XPMESH_FRAMES = '1024';
s.node.healthcheck.interval = '10s';
s.node.healthcheck.timeout = '15s';
s.demo.deploy.replicas = 0;
s.load.command = [
  'load',
  '--connect',
  'dns:tasks.node:7500',
  '--instances',
  String(n),
  '--procs',
  '1',
  '--duration',
  '10000',
  '--json',
  '/reports/load.json',
  '--html',
  '/reports/load.html',
];
process.stdout.write(stringify(stack));
