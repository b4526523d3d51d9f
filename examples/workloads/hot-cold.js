/**
 * hot-cold: an example workload module for `xpmesh load --workload ./examples/workloads/hot-cold.js`
 * (docs/load.md, "Writing a workload").
 *
 * One word per touched page. A tenth of the words are hot and get 90% of the accesses; 20% of the
 * accesses are writes, and now and then a process writes one word in a burst of 8 writes in a row
 * (the burst lives in `t.state`, which persists across calls and chunks). The home instance
 * reclaims pages in the background, so hot pages are swapped out and faulted back under load.
 *
 * `plan` runs once in the load tester; `op` is sent as source text to every process and runs in
 * its worker thread: it may use only its argument `t` and JavaScript built-ins.
 *
 * @type {import('../../packages/node/dist/load/workload-api.js').WorkloadModule<{hot: number, hotFraction: number, writeFraction: number, burst: number}>}
 */
export default {
  name: 'hot-cold',
  description: '90% of accesses on a hot tenth of the words, 20% writes with bursts, background reclaim',

  plan({ touchedPages }) {
    const keys = touchedPages.map((page) => ({ page, word: 0 }));
    const hot = Math.max(1, Math.ceil(keys.length / 10));
    return {
      keys,
      params: { hot, hotFraction: 0.9, writeFraction: 0.2, burst: 8 },
      background: { reclaim: { pauseMs: 50 } },
      chunkMs: 200,
    };
  },

  op(t) {
    const p = t.params;
    const s = t.state;
    if (s.burstLeft > 0) {
      s.burstLeft--;
      t.write(s.burstKey);
      return;
    }
    const cold = t.keys - p.hot;
    const key =
      cold <= 0 || t.random() < p.hotFraction
        ? Math.floor(t.random() * Math.min(p.hot, t.keys))
        : p.hot + Math.floor(t.random() * cold);
    if (t.random() < p.writeFraction) {
      if (t.random() < 0.05) {
        s.burstKey = key;
        s.burstLeft = p.burst - 1;
      }
      t.write(key);
    } else {
      t.read(key);
    }
  },
};
