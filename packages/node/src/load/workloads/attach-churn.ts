import type { WorkloadModule } from '../workload-api.js';
import { type MixParams, mixOp, onePerPage } from './mix.js';

/** Attachers detach and re-attach between short bursts while the home writes. */
const attachChurn: WorkloadModule<MixParams> = {
  name: 'attach-churn',
  description: 'attachers detach and re-attach the segment between short bursts while the home writes',
  plan: ({ touchedPages }) => ({
    keys: onePerPage(touchedPages),
    params: { writeFraction: 0.3, homeWriteFraction: 0.5 },
    background: { churn: { every: 1 } },
    chunkMs: 50,
  }),
  op: mixOp,
};
export default attachChurn;
