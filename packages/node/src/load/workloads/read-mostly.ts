import type { WorkloadModule } from '../workload-api.js';
import { onePerPage } from './mix.js';

/** One writer (the last process: a remote attacher when there are 2+ instances); the rest read. */
const readMostly: WorkloadModule = {
  name: 'read-mostly',
  description: 'one writer (a remote attacher) writes one word per page; every other process only reads',
  plan: ({ touchedPages }) => ({ keys: onePerPage(touchedPages) }),
  op(t) {
    const key = Math.floor(t.random() * t.keys);
    if (t.procs === 1) {
      if (t.random() < 0.1) t.write(key);
      else t.read(key);
    } else if (t.proc === t.procs - 1) t.write(key);
    else t.read(key);
  },
};
export default readMostly;
