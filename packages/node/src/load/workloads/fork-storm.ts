import type { WorkloadModule } from '../workload-api.js';
import { type MixParams, mixOp, onePerPage } from './mix.js';

/** Copy-on-write under attachers: the home process writes while it is forked again and again. */
const forkStorm: WorkloadModule<MixParams> = {
  name: 'fork-storm',
  description: 'the home process writes while it is forked repeatedly (copy-on-write under attachers)',
  plan: ({ touchedPages }) => ({
    keys: onePerPage(touchedPages),
    params: { writeFraction: 0.3, homeWriteFraction: 0.6 },
    background: { fork: { pauseMs: 5, childLifeMs: 20 } },
  }),
  op: mixOp,
};
export default forkStorm;
