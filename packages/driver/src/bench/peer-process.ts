/**
 * Child process of the driver benchmark: one instance (instance.ts LocalInstance) and/or the raw
 * echo server (raw.ts), driven by RemoteInstance over the IPC channel. Exits on 'close' or when the
 * parent goes away.
 */
import { cpuNow, type InstanceOptions, LocalInstance } from './instance.js';
import { profileStart, profileStop } from './profile.js';
import { type RawServer, startRawServer } from './raw.js';

let inst: LocalInstance | undefined;
let raw: RawServer | undefined;

type Args = {
  segid: string;
  pages: number;
  access: 'r' | 'rw';
  prefault: boolean;
  key: number;
  stride: number;
};

async function handle(op: string, arg: unknown): Promise<unknown> {
  const a = arg as Args;
  switch (op) {
    case 'create':
      inst = await LocalInstance.create(arg as InstanceOptions);
      return inst.address;
    case 'raw':
      raw ??= await startRawServer();
      return raw.port;
    case 'connect':
      return inst!.connect(arg as Array<{ node: string; url: string }>);
    case 'exportSeg':
      return inst!.exportSeg(arg as number);
    case 'attach':
      return inst!.attach(a.segid, a.pages, a.access, a.prefault);
    case 'readAll':
      return inst!.readAll(a.key, a.stride);
    case 'cpu':
      return cpuNow();
    case 'profile-start':
      return profileStart();
    case 'profile-stop':
      return profileStop(arg as string);
    case 'close':
      await inst?.close();
      await raw?.close();
      setImmediate(() => process.exit(0));
      return undefined;
    default:
      throw new Error(`unknown op ${op}`);
  }
}

process.on('message', (m: { id: number; op: string; args: unknown }) => {
  handle(m.op, m.args).then(
    (value) => process.send!({ id: m.id, ok: true, value }),
    (e: unknown) => process.send!({ id: m.id, ok: false, error: String((e as Error)?.stack ?? e) }),
  );
});
process.on('disconnect', () => process.exit(0));
