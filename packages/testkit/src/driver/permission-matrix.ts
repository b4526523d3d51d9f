/**
 * XPMEM's permission matrix, System V IPC style (checked at the home): the owner bits apply to the
 * owner's uid, else the group bits to its gid, else the other bits; RDONLY needs read, RDWR read and
 * write. The source process (owner) is uid 1000, gid 1000. Shared by the in-process and the
 * separate-process scenario suites.
 */
export type PermissionCase = [
  mode: number,
  access: 'r' | 'rw',
  uid: number,
  gid: number,
  expected: string | null,
];

export const PERMISSION_MATRIX: readonly PermissionCase[] = [
  [0o600, 'r', 1000, 1000, null],
  [0o600, 'rw', 1000, 1000, null],
  [0o400, 'r', 1000, 1000, null],
  [0o400, 'rw', 1000, 1000, 'E_PERM'],
  [0o200, 'r', 1000, 1000, 'E_PERM'],
  [0o200, 'rw', 1000, 1000, 'E_PERM'],
  [0o000, 'r', 1000, 1000, 'E_PERM'],
  [0o000, 'rw', 1000, 1000, 'E_PERM'],
  [0o066, 'r', 1000, 1000, 'E_PERM'], // the owner gets the owner bits only
  [0o640, 'r', 2000, 1000, null], // group
  [0o640, 'rw', 2000, 1000, 'E_PERM'],
  [0o660, 'rw', 2000, 1000, null],
  [0o006, 'r', 2000, 1000, 'E_PERM'], // a group member gets the group bits only
  [0o604, 'r', 2000, 2000, null], // other
  [0o604, 'rw', 2000, 2000, 'E_PERM'],
  [0o600, 'r', 2000, 2000, 'E_PERM'],
  [0o606, 'rw', 2000, 2000, null],
];
