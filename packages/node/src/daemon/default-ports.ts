/**
 * The instance's default ports. A module of its own, without imports: `xpmesh ctl` reads the admin
 * port from it and must not load the daemon's configuration (cli/scripting.test.ts).
 */

/** `--listen-port`: the peer link. */
export const DEFAULT_LISTEN_PORT = 7400;
/** `--admin-port`: the admin HTTP API, where `xpmesh ctl` looks without `--url`. */
export const DEFAULT_ADMIN_PORT = 7500;
