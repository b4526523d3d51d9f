/**
 * Per-peer credential policy at the home (issue 13 point 10; the trust model is in
 * docs/reliability.md, "Trust model").
 *
 * A remote `get` carries the uid and gid of the attaching process, as its instance claims them.
 * The cluster key proves that the peer is a member, not who runs the process there: like NFS
 * AUTH_SYS, the home believes the claim unless a policy for that peer says otherwise. A policy,
 * keyed by peer node id (or "*" for every peer without its own entry), rewrites or refuses the
 * claim before the driver checks it against the segment's mode bits:
 *
 *   deny                 every `get` from that peer is refused (E_PERM);
 *   squash: [uid, gid]   every claim becomes uid:gid (NFS all_squash, anonuid/anongid);
 *   uids / gids          a claimed id listed here becomes the mapped one (explicit maps);
 *   rootSquash: [u, g]   a claimed uid 0 becomes u, a claimed gid 0 becomes g (NFS root_squash);
 *   onlyUids: [[a, b]]   after the maps, a uid outside these ranges is refused (E_PERM).
 *
 * Order: deny, squash, maps, rootSquash, onlyUids. No policy (the default): claims are trusted.
 *
 * Applied where the home answers `get`: `withCredentialPolicy` wraps the peer network handed to the
 * driver and rewrites `get` requests on their way in, so the driver itself is unchanged.
 */
import type { PeerNetwork, PeerSession, RequestHandler } from '@xpmesh/protocol';
import { z } from 'zod';

const id = z.number().int().min(0).max(0xffffffff);
const idMap = z.record(z.string().regex(/^\d{1,10}$/, 'a uid/gid as decimal text'), id);

const RULE = z
  .object({
    deny: z.boolean().optional(),
    squash: z.tuple([id, id]).optional(),
    uids: idMap.optional(),
    gids: idMap.optional(),
    rootSquash: z.tuple([id, id]).optional(),
    onlyUids: z
      .array(z.tuple([id, id]))
      .max(64)
      .optional(),
  })
  .strict();

const POLICY = z.record(z.string().regex(/^(\*|[A-Za-z0-9._-]{1,64})$/, 'a node id or *'), RULE);

export type CredentialRule = z.infer<typeof RULE>;
export type CredentialPolicy = z.infer<typeof POLICY>;

/** What the policy did to one claim (the `action` label of xpmesh_cred_policy_total). */
export type CredentialAction = 'trusted' | 'mapped' | 'denied';
export const CREDENTIAL_ACTIONS: readonly CredentialAction[] = ['trusted', 'mapped', 'denied'];

/** Parses the JSON text of --cred-policy; throws an Error with a one-line message. */
export function parseCredentialPolicy(text: string): CredentialPolicy {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  const r = POLICY.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Error(`${i?.path.join('.') || '(policy)'}: ${i?.message ?? 'invalid'}`);
  }
  return r.data;
}

export type Credentials = { uid: number; gid: number };

/** Applies the policy for `node` to a claim: the credentials to check, or undefined (refused). */
export function applyCredentialPolicy(
  policy: CredentialPolicy,
  node: string,
  claim: Credentials,
): { cred?: Credentials; action: CredentialAction } {
  const rule = Object.hasOwn(policy, node)
    ? policy[node]
    : Object.hasOwn(policy, '*')
      ? policy['*']
      : undefined;
  if (!rule) return { cred: claim, action: 'trusted' };
  if (rule.deny) return { action: 'denied' };
  let { uid, gid } = claim;
  if (rule.squash) [uid, gid] = rule.squash;
  else {
    if (rule.uids && Object.hasOwn(rule.uids, String(uid))) uid = rule.uids[String(uid)];
    if (rule.gids && Object.hasOwn(rule.gids, String(gid))) gid = rule.gids[String(gid)];
    if (rule.rootSquash) {
      if (uid === 0) uid = rule.rootSquash[0];
      if (gid === 0) gid = rule.rootSquash[1];
    }
  }
  if (rule.onlyUids && !rule.onlyUids.some(([a, b]) => uid >= a && uid <= b)) return { action: 'denied' };
  const same = uid === claim.uid && gid === claim.gid;
  return { cred: { uid, gid }, action: same ? 'trusted' : 'mapped' };
}

/**
 * The peer network as the driver should see it: identical, except that every incoming `get` has
 * its uid/gid rewritten by the policy (or is refused with E_PERM) before the driver's handler runs.
 */
export function withCredentialPolicy(
  net: PeerNetwork,
  policy: CredentialPolicy,
  count: (action: CredentialAction, node: string) => void,
): PeerNetwork {
  const onRequest = (handler: RequestHandler) =>
    net.onRequest((from: PeerSession, msg) => {
      if (msg.t !== 'get') return handler(from, msg);
      const r = applyCredentialPolicy(policy, from.node, { uid: msg.uid, gid: msg.gid });
      count(r.action, from.node);
      if (!r.cred) {
        return Promise.reject(
          Object.assign(new Error(`the credential policy refuses every get from ${from.node} as claimed`), {
            code: 'E_PERM',
          }),
        );
      }
      return handler(from, { ...msg, uid: r.cred.uid, gid: r.cred.gid });
    });
  return new Proxy(net, {
    get(target, prop) {
      if (prop === 'onRequest') return onRequest;
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
