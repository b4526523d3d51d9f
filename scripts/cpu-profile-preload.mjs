// CPU profile of an instance's main thread for the scale runs (scripts/scale.mjs --profile DIR).
// `--cpu-prof` is not allowed in NODE_OPTIONS, so the runner starts instances with
// NODE_OPTIONS="--import <this file>" and XPMESH_CPU_PROFILE_DIR=DIR: the V8 sampling profiler runs
// from start-up and <DIR>/<pid>.cpuprofile is written when the process exits. Worker threads
// (the simulated processes) are not profiled. Sample timestamps are CLOCK_MONOTONIC microseconds,
// the clock of process.hrtime, so a runner can cut the profile into phases.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';

const dir = process.env.XPMESH_CPU_PROFILE_DIR;
if (dir && isMainThread) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', {
    interval: Number(process.env.XPMESH_CPU_PROFILE_US ?? 1000),
  });
  session.post('Profiler.start');
  // The in-process session answers synchronously, so this completes inside the 'exit' handler.
  process.once('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
