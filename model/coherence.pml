/*
 * xpmesh coherence protocol model (Promela, spin 6.5).
 *
 * Home instance (directory for every exported page) + two remote instances, NP pages (1 or 2).
 * Single writer / multiple readers, invalidate/ack with writeback and downgrade, recall, reclaim
 * (invalidate every mapper, collect every ack, only then free the frame), remote crash, lease
 * expiry (pause / partition / slow peer) with message loss, fencing with an epoch bump, rejoin
 * with a new epoch, stale-epoch refusal, and the "only dirty copy died" revert policy.
 *
 * See docs/model.md for what is modelled, what is abstracted, the mapping to
 * packages/driver/src/page-state.ts, the properties and the commands.
 *
 * Compile-time knobs (spin -D...):
 *   NP=1|2          pages (default 1)
 *   MAXV=n          largest data value; every write increments a page's counter (default 2)
 *   MAXFAULTS=n     crashes + lease expiries in one run, over all remotes (default 1)
 * Deliberate bugs (each must make spin report errors):
 *   BUG_GRANT_DURING_INVALIDATE  a map request that arrives while an invalidation of the page is
 *                                in flight is granted at once instead of being queued
 *   BUG_FREE_BEFORE_ACKS         reclaim frees the frame as soon as the invalidations are sent
 *   BUG_NO_WRITEBACK             a recall does not ask for (or install) the dirty data
 *   BUG_NO_LEASE                 the home fences a live peer on an ack deadline although the
 *                                peer's lease has not expired (the peer keeps using its copies)
 *   BUG_ACCEPT_STALE_EPOCH       the home accepts messages of a fenced session
 *   BUG_REMOTE_IGNORES_EPOCH     a remote installs a map reply of its previous session
 *   BUG_ACK_AFTER_EXPIRY         a remote whose lease expired (it dropped its copies) still acks
 *                                invalidations of its old session, with no data
 *   BUG_GAP_LOSS                 a broken link loses one message and delivers later ones
 *   BUG_NO_FENCE                 nobody is ever fenced (liveness must fail)
 */

#ifndef NP
#define NP 1
#endif
#define NR 2
#ifndef MAXV
#define MAXV 2
#endif
#ifndef MAXFAULTS
#define MAXFAULTS 1
#endif
/* per page and per session at most 2 home->remote and 3 remote->home messages are unconsumed;
   messages of an old session may still sit in the channel (they are refused on arrival) */
#define CAP (3 * NP * (MAXFAULTS + 1))

mtype = { MAP, MAPOK, INV, ACK, DETACH };
/* message fields: type, page, arg, value, epoch
 *   MAP    arg = access asked (A_R / A_RW)                       remote -> home
 *   MAPOK  arg = access granted, value = page data              home -> remote
 *   INV    arg = F_WB | F_DG                                     home -> remote
 *   ACK    arg = K_DIRTY | K_KEPT, value = data if K_DIRTY       remote -> home
 *   DETACH arg = K_DIRTY, value = data if K_DIRTY                remote -> home
 */

/* access / copy state */
#define A_NONE 0
#define A_R    1
#define A_RW   2
/* invalidate flags (messages.ts Invalidate.writeback / .downgrade) */
#define F_WB   1
#define F_DG   2
/* ack / detach flags */
#define K_DIRTY 1   /* data enclosed (InvalidateAck.dirty / Detach.dirty non-empty) */
#define K_KEPT  2   /* the mapper kept a read-only copy (downgrade) */

/* the operation in flight on a page at the home (page state "invalidating" when != OP_NONE) */
#define OP_NONE    0
#define OP_UPGRADE 1   /* remote write miss / upgrade: invalidate the other copies, then grant rw */
#define OP_RECALL  2   /* remote read miss while the other remote holds rw: recall, downgrade */
#define OP_HREAD   3   /* home local read of a page a remote holds rw: recall with downgrade */
#define OP_HWRITE  4   /* home local write: invalidate every copy (writeback) */
#define OP_RECLAIM 5   /* reclaim: invalidate every copy (writeback), then free the frame */

#define IX(p, i) ((p) * NR + (i))
#define OTHER(i) (1 - (i))

chan h2r[NR] = [CAP] of { mtype, byte, byte, byte, byte };
chan r2h[NR] = [CAP] of { mtype, byte, byte, byte, byte };

/* ---- home: the directory (driver-side reverse map) ---- */
byte mapr[NP * NR];    /* what the home believes remote i holds: A_NONE / A_R / A_RW */
bool pend[NP * NR];    /* an invalidate was sent to remote i, its ack is awaited */
byte req[NP * NR];     /* map request of remote i (access) queued or in service, 0 = none */
byte qold[NP];         /* remote (+1) whose queued request is served next (FIFO, like the page
                          mutex in home.ts), 0 = none queued */
byte op[NP];           /* OP_* in flight */
byte opfor[NP];        /* remote (+1) to grant when the op completes, 0 = none */
byte hval[NP];         /* the frame's data (kept on swap while freed) */
bool freed[NP];        /* frame freed by reclaim (page swapped out) */
byte hsess[NR];        /* the epoch the home accepts from remote i */
bool fenced[NR];       /* the home fenced remote i's current session; cleared when i rejoins */

/* ---- remotes ---- */
byte rcopy[NP * NR];   /* the copy remote i really holds (ghost for the home) */
byte rval[NP * NR];    /* its data */
byte waiting[NP * NR]; /* access of the map request remote i has outstanding, 0 = none */
byte ep[NR];           /* remote i's session epoch */
bool dead[NR];         /* crashed: stops for good, its link loses messages */
bool lease[NR] = true; /* remote i's lease is valid; false after a pause / partition expired it */
bool rcut[NR];         /* link remote i -> home broke: every later message of the session is lost
                          (home -> remote: a remote whose lease expired discards what it receives) */

/* ---- ghost ---- */
byte latest[NP];       /* value of the latest completed write of the page */
hidden byte lost;      /* "only dirty copy died" events (the page reverted); not part of the state */
hidden byte refused;   /* stale-epoch messages refused; not part of the state */
byte faults;           /* crashes + lease expiries so far */

/* scratch variables: used only inside atomic sequences that never block, so they can live outside
   the state vector (a local would keep the last message and multiply the states) */
hidden mtype m;
hidden byte p, a, v, e, fl, fp, rp, q;

/* Directory-consistency checks: the home's and the remotes' bookkeeping agree with the messages
   they receive. -DNOSANITY turns them off, so that a bug variant has to be caught by one of the
   properties (single writer, no free while mapped, no stale read) instead. */
#ifdef NOSANITY
#define SANE(x) skip
#else
#define SANE(x) assert(x)
#endif

#define ALIVE(i) (!dead[i] && lease[i])

/* single writer / multiple readers over the copies remotes really hold */
#define SWMR(p) (!(rcopy[IX(p, 0)] == A_RW && rcopy[IX(p, 1)] != A_NONE) && \
                 !(rcopy[IX(p, 1)] == A_RW && rcopy[IX(p, 0)] != A_NONE))
#define NO_REMOTE_RW(p) (rcopy[IX(p, 0)] != A_RW && rcopy[IX(p, 1)] != A_RW)
#define NO_REMOTE_COPY(p) (rcopy[IX(p, 0)] == A_NONE && rcopy[IX(p, 1)] == A_NONE)
#define NO_MAPPER(p) (mapr[IX(p, 0)] == A_NONE && mapr[IX(p, 1)] == A_NONE)
#define NO_RW_MAPPER(p) (mapr[IX(p, 0)] != A_RW && mapr[IX(p, 1)] != A_RW)
#define NO_QUEUED(p) (req[IX(p, 0)] == 0 && req[IX(p, 1)] == 0)
#define NO_PEND(p) (!pend[IX(p, 0)] && !pend[IX(p, 1)])

#if NP == 1
#define PEND_ANY(i) (pend[IX(0, i)])
#else
#define PEND_ANY(i) (pend[IX(0, i)] || pend[IX(1, i)])
#endif

#ifdef BUG_NO_FENCE
#define FENCE_OK(i) false
#elif defined(BUG_NO_LEASE)
/* ack deadline: fence whoever has not acked in time, live or not */
#define FENCE_OK(i) (dead[i] || !lease[i] || PEND_ANY(i))
#else
/* the peer is dead, or its lease has expired (timing assumption: lease < fence deadline) */
#define FENCE_OK(i) (dead[i] || !lease[i])
#endif

/* home -> remote i; the link of a dead peer, or a broken link, loses the message */
inline hsend(i, m, p, a, v) {
  if
  :: dead[i] -> skip
  :: else -> assert(nfull(h2r[i])); h2r[i]!m, p, a, v, hsess[i]
  fi
}

/* remote i -> home */
inline rsend(i, m, p, a, v) {
  if
  :: rcut[i] -> skip
  :: else -> assert(nfull(r2h[i])); r2h[i]!m, p, a, v, ep[i]
  fi
}

/* Message loss. A link is a TCP stream: it delivers in order and, when it breaks, loses a suffix
   (everything not yet delivered and everything sent after). A link can break only when the peer
   is dead or its lease has expired (pause / partition). With BUG_GAP_LOSS a single message is
   lost and later ones still arrive (a link that silently reconnects within the session). */
#ifdef BUG_GAP_LOSS
#define LOSE(c, cut) c?_, _, _, _, _
#else
#define LOSE(c, cut) cut = true; do :: nempty(c) -> c?_, _, _, _, _ :: empty(c) -> break od
#endif

inline grant(p, i, a) {
  mapr[IX(p, i)] = a;
  req[IX(p, i)] = 0;
  hsend(i, MAPOK, p, a, hval[p])
}

/* send an invalidate to remote i if the home believes it maps the page */
inline inval(p, i, fl) {
  if
  :: mapr[IX(p, i)] != A_NONE ->
     pend[IX(p, i)] = true;
#ifdef BUG_NO_WRITEBACK
     hsend(i, INV, p, (fl) & F_DG, 0)
#else
     hsend(i, INV, p, fl, 0)
#endif
  :: else -> skip
  fi
}

inline do_free(p) {
  assert(NO_MAPPER(p));       /* no free while mapped: the directory is empty ... */
  assert(NO_REMOTE_COPY(p));  /* ... and no live remote really holds a copy */
  freed[p] = true
}

/* serve remote i's queued map request; only when no invalidation of the page is in flight */
inline serve(p, i) {
  SANE(op[p] == OP_NONE);
  freed[p] = false;           /* swap in on a remote fault */
  if
  :: req[IX(p, i)] == A_R ->
     SANE(mapr[IX(p, i)] != A_RW);
     if
     :: mapr[IX(p, OTHER(i))] == A_RW ->
        inval(p, OTHER(i), F_WB | F_DG); op[p] = OP_RECALL; opfor[p] = i + 1
     :: else -> grant(p, i, A_R)
     fi
  :: req[IX(p, i)] == A_RW ->
     if
     :: mapr[IX(p, OTHER(i))] != A_NONE || mapr[IX(p, i)] == A_R ->
        /* as resolveConflicts in home.ts: the other copies go; an upgrading requester's own read
           copy goes too (the grant brings the data back) */
        inval(p, OTHER(i), F_WB); inval(p, i, F_WB); op[p] = OP_UPGRADE; opfor[p] = i + 1
     :: else -> grant(p, i, A_RW)
     fi
  fi
}

/* complete the page's operation once every ack is in (or its sender was fenced) */
inline try_complete(p) {
  if
  :: op[p] != OP_NONE && NO_PEND(p) ->
     if
     :: op[p] == OP_RECLAIM -> op[p] = OP_NONE; do_free(p)
     :: op[p] == OP_UPGRADE && opfor[p] != 0 -> op[p] = OP_NONE; grant(p, opfor[p] - 1, A_RW)
     :: op[p] == OP_RECALL && opfor[p] != 0 -> op[p] = OP_NONE; grant(p, opfor[p] - 1, A_R)
     :: else -> op[p] = OP_NONE
     fi;
     opfor[p] = 0
  :: else -> skip
  fi
}

/* fence remote i: epoch bump, drop its reverse-map entries, complete what waited for it */
inline fence(i) {
  hsess[i]++;
  fenced[i] = true;
  for (fp : 0 .. NP - 1) {
    if
    :: mapr[IX(fp, i)] == A_RW && latest[fp] != hval[fp] ->
       lost++; latest[fp] = hval[fp]     /* only dirty copy died: revert to the written-back data */
    :: else -> skip
    fi;
    mapr[IX(fp, i)] = A_NONE;
    pend[IX(fp, i)] = false;
    req[IX(fp, i)] = 0;
    if
    :: qold[fp] == i + 1 ->
       qold[fp] = (req[IX(fp, OTHER(i))] != 0 && opfor[fp] != OTHER(i) + 1 -> OTHER(i) + 1 : 0)
    :: else -> skip
    fi;
    if
    :: opfor[fp] == i + 1 -> opfor[fp] = 0
    :: else -> skip
    fi;
    try_complete(fp)
  }
}

/* the home's receive path for the link with remote i */
proctype HomeRx(byte i) {
end_hrx:
  do
  :: atomic {
       nempty(r2h[i]) -> r2h[i]?m, p, a, v, e;
       if
#ifndef BUG_ACCEPT_STALE_EPOCH
       :: e != hsess[i] -> refused++    /* E_STALE_EPOCH: a fenced session changes nothing */
#endif
       :: else ->
          if
          :: m == MAP ->
             SANE(req[IX(p, i)] == 0);
             req[IX(p, i)] = a;
             if
             :: op[p] == OP_NONE && qold[p] == 0 -> serve(p, i)
#ifdef BUG_GRANT_DURING_INVALIDATE
             :: else -> grant(p, i, a)
#else
             :: else ->                  /* queued: no grant while an invalidation is in flight */
                if
                :: qold[p] == 0 -> qold[p] = i + 1
                :: else -> skip
                fi
#endif
             fi
          :: m == ACK ->
             SANE(pend[IX(p, i)]);
             pend[IX(p, i)] = false;
             if
             :: a & K_DIRTY ->
#ifndef BUG_NO_WRITEBACK
                hval[p] = v
#else
                skip
#endif
             :: else -> skip
             fi;
             if
             :: a & K_KEPT -> mapr[IX(p, i)] = A_R
             :: else -> mapr[IX(p, i)] = A_NONE
             fi;
             try_complete(p)
          :: m == DETACH ->
             SANE(!(a & K_DIRTY) || mapr[IX(p, i)] == A_RW);
             if
             :: a & K_DIRTY -> hval[p] = v  /* nothing is lost on detach */
             :: else -> skip
             fi;
             mapr[IX(p, i)] = A_NONE        /* an awaited ack still comes (the INV is acked empty) */
          fi
       fi
     }
  :: atomic { (dead[i] || !lease[i]) && !rcut[i] && nempty(r2h[i]) -> LOSE(r2h[i], rcut[i]) }
  od
}

/* local processes at the home touching page p, and the kernel's reclaim of it */
proctype HomeUser(byte pg) {
end_hu:
  do
  :: atomic { op[pg] == OP_NONE && freed[pg] -> freed[pg] = false }   /* local fault: swap in */
  :: atomic {                                                        /* local read */
       op[pg] == OP_NONE && !freed[pg] && NO_RW_MAPPER(pg) ->
       assert(NO_REMOTE_RW(pg));
       assert(hval[pg] == latest[pg])
     }
  :: atomic {                                                        /* local write */
       op[pg] == OP_NONE && !freed[pg] && NO_MAPPER(pg) && hval[pg] < MAXV ->
       assert(NO_REMOTE_COPY(pg));
       assert(hval[pg] == latest[pg]);
       hval[pg]++;
       latest[pg] = hval[pg]
     }
  :: atomic {                                   /* local read of a page a remote holds rw: recall */
       op[pg] == OP_NONE && NO_QUEUED(pg) && !NO_RW_MAPPER(pg) ->
       op[pg] = OP_HREAD;
       inval(pg, 0, F_WB | F_DG);
       inval(pg, 1, F_WB | F_DG)
     }
  :: atomic {                                   /* local write of a page remotes map: invalidate */
       op[pg] == OP_NONE && NO_QUEUED(pg) && !NO_MAPPER(pg) ->
       op[pg] = OP_HWRITE;
       inval(pg, 0, F_WB);
       inval(pg, 1, F_WB)
     }
  :: atomic {                                   /* reclaim (try_to_unmap -> rmap notifier) */
       op[pg] == OP_NONE && NO_QUEUED(pg) && !freed[pg] ->
       if
       :: NO_MAPPER(pg) -> do_free(pg)
       :: else ->
          op[pg] = OP_RECLAIM;
          inval(pg, 0, F_WB);
          inval(pg, 1, F_WB);
#ifdef BUG_FREE_BEFORE_ACKS
          op[pg] = OP_NONE; mapr[IX(pg, 0)] = A_NONE; mapr[IX(pg, 1)] = A_NONE; do_free(pg);
          pend[IX(pg, 0)] = false; pend[IX(pg, 1)] = false;
#endif
          skip
       fi
     }
  od
}

/* the home serves queued map requests of page pg in arrival order once no invalidation is in flight
   (a separate process, so that weak fairness applies to it) */
proctype Granter(byte pg) {
end_grant:
  do
  :: atomic {
       op[pg] == OP_NONE && qold[pg] != 0 ->
       q = qold[pg] - 1;
       qold[pg] = (req[IX(pg, OTHER(q))] != 0 -> OTHER(q) + 1 : 0);
       serve(pg, q)
     }
  od
}

/* the home's failure detector: heartbeat miss or ack deadline */
proctype Fencer() {
end_fence:
  do
  :: atomic { !fenced[0] && FENCE_OK(0) -> fence(0) }
  :: atomic { !fenced[1] && FENCE_OK(1) -> fence(1) }
  od
}

/* drop every copy remote i holds (crash, or its lease expired: dirty data is gone) */
inline drop_all(i) {
  for (rp : 0 .. NP - 1) {
    rcopy[IX(rp, i)] = A_NONE;
    rval[IX(rp, i)] = 0;
    waiting[IX(rp, i)] = 0
  }
}

/* remote i's driver: receive path, crash, lease expiry, rejoin */
proctype RemoteRx(byte i) {
end_rrx:
  do
  :: atomic {
       !dead[i] && nempty(h2r[i]) -> h2r[i]?m, p, a, v, e;
       if
#ifndef BUG_REMOTE_IGNORES_EPOCH
       :: e != ep[i] -> skip                     /* from a previous session: refused */
#endif
#ifdef BUG_ACK_AFTER_EXPIRY
       :: !lease[i] && m != INV -> skip
#else
       :: !lease[i] -> skip     /* the lease expired: the session is over for this remote; it must
                                   not answer (an empty ack would hide the dirty data it dropped) */
#endif
       :: else ->
          if
          :: m == MAPOK ->
             SANE(waiting[IX(p, i)] == a);
             rcopy[IX(p, i)] = a;
             rval[IX(p, i)] = v;
             waiting[IX(p, i)] = 0;
             assert(SWMR(p))                     /* single writer / multiple readers */
          :: m == INV ->
             fl = 0;
             if
             :: rcopy[IX(p, i)] == A_RW && (a & F_WB) -> fl = K_DIRTY
             :: else -> skip
             fi;
             if
             :: rcopy[IX(p, i)] == A_RW && (a & F_DG) -> fl = fl | K_KEPT; rcopy[IX(p, i)] = A_R
             :: else -> rcopy[IX(p, i)] = A_NONE
             fi;
             rsend(i, ACK, p, fl, rval[IX(p, i)]);
             if
             :: rcopy[IX(p, i)] == A_NONE -> rval[IX(p, i)] = 0
             :: else -> skip
             fi
          fi
       fi
     }
  :: atomic {                                  /* crash: the instance stops for good */
       !dead[i] && faults < MAXFAULTS -> faults++; dead[i] = true; drop_all(i)
     }
  :: atomic {                                  /* pause / partition: the lease expires, the */
       !dead[i] && lease[i] && faults < MAXFAULTS ->   /* remote drops its copies itself */
       faults++; lease[i] = false; drop_all(i)
     }
  :: atomic {                                  /* rejoin: new session, new epoch */
       !dead[i] && !lease[i] && fenced[i] ->
       ep[i] = hsess[i]; lease[i] = true; fenced[i] = false; rcut[i] = false
     }
  :: dead[i] -> break
  od
}

/* a process on remote i touching page p through its attachment */
proctype RemoteUser(byte i; byte pg) {
end_ru:
  do
  :: atomic {                                                 /* read hit */
       ALIVE(i) && rcopy[IX(pg, i)] != A_NONE -> assert(rval[IX(pg, i)] == latest[pg])
     }
  :: atomic {                                                 /* write hit */
       ALIVE(i) && rcopy[IX(pg, i)] == A_RW && rval[IX(pg, i)] < MAXV ->
       assert(SWMR(pg));
       assert(rval[IX(pg, i)] == latest[pg]);
       rval[IX(pg, i)]++;
       latest[pg] = rval[IX(pg, i)]
     }
  :: atomic {                                                 /* read miss */
       ALIVE(i) && rcopy[IX(pg, i)] == A_NONE && waiting[IX(pg, i)] == 0 ->
       waiting[IX(pg, i)] = A_R; rsend(i, MAP, pg, A_R, 0)
     }
  :: atomic {                                                 /* write miss or upgrade */
       ALIVE(i) && rcopy[IX(pg, i)] != A_RW && waiting[IX(pg, i)] == 0 ->
       waiting[IX(pg, i)] = A_RW; rsend(i, MAP, pg, A_RW, 0)
     }
  :: atomic {                                                 /* detach / evict the copy */
       ALIVE(i) && rcopy[IX(pg, i)] != A_NONE && waiting[IX(pg, i)] == 0 ->
       if
       :: rcopy[IX(pg, i)] == A_RW -> rsend(i, DETACH, pg, K_DIRTY, rval[IX(pg, i)])
       :: else -> rsend(i, DETACH, pg, 0, 0)
       fi;
       rcopy[IX(pg, i)] = A_NONE;
       rval[IX(pg, i)] = 0
     }
  :: dead[i] -> break
  od
}

init {
  atomic {
    run HomeRx(0); run HomeRx(1); run Fencer();
    run RemoteRx(0); run RemoteRx(1);
    run HomeUser(0); run Granter(0); run RemoteUser(0, 0); run RemoteUser(1, 0);
#if NP > 1
    run HomeUser(1); run Granter(1); run RemoteUser(0, 1); run RemoteUser(1, 1);
#endif
  }
}

/* ---- progress (check with: pan -a -f -N <name>) ---- */
/* every invalidation completes: an operation in flight on page 0 always finishes */
ltl inval_completes { [] ((op[0] != OP_NONE) -> <> (op[0] == OP_NONE)) }
/* every remote fault of remote 0 on page 0 is eventually answered (or abandoned by a fence) */
ltl fault_completes { [] ((waiting[0] != 0) -> <> (waiting[0] == 0)) }
