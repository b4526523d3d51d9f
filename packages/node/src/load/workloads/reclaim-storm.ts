import type { WorkloadModule } from '../workload-api.js';
import { type MixParams, mixOp, onePerPage } from './mix.js';

/** A read/write mix while the home forces reclaim of exported pages back to back. */
const reclaimStorm: WorkloadModule<MixParams> = {
  name: 'reclaim-storm',
  description:
    'read/write mix while the home instance forces reclaim (swap-out) of exported pages back to back',
  plan: ({ touchedPages }) => ({
    keys: onePerPage(touchedPages),
    params: { writeFraction: 0.3, homeWriteFraction: 0.3 },
    background: { reclaim: { pauseMs: 0 } },
  }),
  op: mixOp,
};
export default reclaimStorm;
