import type { KeySpec, WorkloadModule } from '../workload-api.js';

interface Params {
  pages: number;
  /** Words per page: one per process (at most 1024). */
  per: number;
}

/** False sharing: process p writes word p of every page and reads any word. */
const pingPong: WorkloadModule<Params> = {
  name: 'ping-pong',
  description: 'false sharing: every process writes its own word of the same pages and reads the others',
  plan: ({ touchedPages, procs }) => {
    const per = Math.min(procs, 1024);
    const keys: KeySpec[] = [];
    for (const page of touchedPages) for (let word = 0; word < per; word++) keys.push({ page, word });
    return { keys, params: { pages: touchedPages.length, per } };
  },
  op(t) {
    if (t.random() < 0.5) {
      const page = Math.floor(t.random() * t.params.pages);
      t.write(page * t.params.per + (t.proc % t.params.per));
    } else t.read(Math.floor(t.random() * t.keys));
  },
};
export default pingPong;
