/**
 * The driver scenario suite (scenarios.ts) over ws on 127.0.0.1: each instance its own OS process
 * (ws-instance.js), driven over IPC (ws-harness.ts).
 */
import { defineDriverScenarios } from './scenarios.js';
import { openWsCluster } from './ws-harness.js';

defineDriverScenarios('ws (one OS process per instance)', openWsCluster);
