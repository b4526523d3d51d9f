import type { KeySpec, WorkloadModule } from '../workload-api.js';
import { type MixParams, mixOp } from './mix.js';

/** Everything at a lower rate: two words per page, reclaim, fork and re-attach churn. */
const mixed: WorkloadModule<MixParams> = {
  name: 'mixed',
  description: 'read/write mix with reclaim, fork and attach/detach churn at a lower rate',
  plan: ({ touchedPages }) => {
    const keys: KeySpec[] = [];
    for (const page of touchedPages) for (const word of [0, 512]) keys.push({ page, word });
    return {
      keys,
      params: { writeFraction: 0.3, homeWriteFraction: 0.3 },
      background: { reclaim: { pauseMs: 20 }, fork: { pauseMs: 100, childLifeMs: 30 }, churn: { every: 3 } },
      chunkMs: 100,
    };
  },
  op: mixOp,
};
export default mixed;
