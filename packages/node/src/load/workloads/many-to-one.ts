import type { WorkloadModule } from '../workload-api.js';
import { type MixParams, mixOp } from './mix.js';

/** XPMEM's many-to-one writers: everyone hammers the same 4 words of one page. */
const manyToOne: WorkloadModule<MixParams> = {
  name: 'many-to-one',
  description: 'every process writes (70%) and reads the same 4 words of one page',
  plan: ({ touchedPages }) => ({
    keys: [0, 1, 2, 3].map((word) => ({ page: touchedPages[0], word })),
    params: { writeFraction: 0.7, homeWriteFraction: 0.7 },
  }),
  op: mixOp,
};
export default manyToOne;
