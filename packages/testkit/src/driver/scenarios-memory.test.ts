/** The driver scenario suite (scenarios.ts) on the in-memory network: three kernels in this process. */
import { openMemoryCluster } from './cluster.js';
import { defineDriverScenarios } from './scenarios.js';

defineDriverScenarios('the in-memory network (one process)', openMemoryCluster);
