/**
 * CPU profile of a measured section of the main thread (node:inspector), written as a .cpuprofile
 * (open in Chrome DevTools, or summarise). The driver benchmark can profile both ends of a path:
 * this process directly, a child over its IPC channel ('profile-start' / 'profile-stop').
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

let session: Session | undefined;

function post(s: Session, method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) =>
    s.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

export async function profileStart(): Promise<void> {
  session = new Session();
  session.connect();
  await post(session, 'Profiler.enable');
  await post(session, 'Profiler.setSamplingInterval', { interval: 100 });
  await post(session, 'Profiler.start');
}

export async function profileStop(path: string): Promise<void> {
  if (!session) return;
  const r = (await post(session, 'Profiler.stop')) as { profile: unknown };
  writeFileSync(path, JSON.stringify(r.profile));
  session.disconnect();
  session = undefined;
}
