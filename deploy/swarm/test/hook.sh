#!/bin/bash
# E2E_HOOK of the Swarm test (packages/node/src/daemon/swarm.test.ts), run by swarm-e2e.sh right after
# `docker stack deploy` with DOCKER_HOST (the manager), E2E_STACK and E2E_NODECTL set; REPORTS is the
# host folder every task mounts as /reports. It orders the one-shots (a stack has no start order):
#   demo (deployed running) -> load (cross-host) -> baseline (the same load on one host) -> chaos,
# and during chaos crashes the host of one instance that is not the home (plan.json) and not h1
# (the manager, where chaos runs): its link cut, then SIGKILL of the host's pid 1 (no FIN reaches anyone). After the survivors had time
# to fence it and the manager marked the host down, it boots again and swarm starts the task there.
# Every wait is bounded; times go to $REPORTS/hook.json.
set -euo pipefail
: "${REPORTS:?}" "${E2E_STACK:?}" "${E2E_NODECTL:?}"
now() { date +%s; }
ms() { date +%s%3N; }
T0=$(ms)
say() { echo "hook [$(( ($(ms) - T0) / 1000 ))s] $*"; }
newest() { docker service ps -q --no-trunc "${E2E_STACK}_$1" 2>/dev/null | head -1; }
state_of() { local id; id=$(newest "$1"); [ -n "$id" ] && docker inspect --format '{{.Status.State}}' "$id"; }
exit_of() { docker inspect --format '{{with index .Status "ContainerStatus"}}{{index . "ExitCode"}}{{end}}' "$(newest "$1")"; }
# wait_done SERVICE SECONDS: until its newest task completes (0) or fails (1)
wait_done() {
  local end=$(( $(now) + $2 )) st
  while [ "$(now)" -lt $end ]; do
    st=$(state_of "$1" || true)
    case "$st" in
      complete) say "$1 complete"; return 0 ;;
      failed|rejected|shutdown|orphaned) say "$1 $st (exit $(exit_of "$1"))"; return 1 ;;
    esac
    sleep 0.5
  done
  say "timeout: $1 not done after $2 s"; return 1
}
run_oneshot() { docker service scale -d "${E2E_STACK}_$1=1" >/dev/null; wait_done "$1" "$2"; }
host_of_slot() {  # the host running task slot $1 of the node service
  docker service ps "${E2E_STACK}_node" --filter desired-state=running --format '{{.Name}} {{.Node}}' |
    awk -v s="${E2E_STACK}_node.$1" '$1==s{print $2; exit}'
}

wait_done demo 300; T_DEMO=$(ms)
run_oneshot load 240; T_LOAD=$(ms)
run_oneshot baseline 240; T_BASE=$(ms)
docker service scale -d "${E2E_STACK}_chaos=1" >/dev/null
end=$(( $(now) + 240 ))
until [ -f "$REPORTS/running.json" ]; do
  [ "$(now)" -lt $end ] || { say "timeout: chaos never reported running"; exit 1; }
  [ "$(state_of chaos || true)" = failed ] && { say "chaos failed before the crash"; exit 1; }
  sleep 0.2
done
VICTIM= HOST=
for id in $(node -e "for (const v of require('$REPORTS/plan.json').victims) console.log(v)"); do
  h=$(host_of_slot "${id#node-}")
  if [ -n "$h" ] && [ "$h" != h1 ]; then VICTIM=$id HOST=$h; break; fi
done
[ -n "$VICTIM" ] || { say "no instance to crash off h1: $(cat "$REPORTS/plan.json")"; exit 1; }
printf '{"node":"%s","host":"%s","t":%s}\n' "$VICTIM" "$HOST" "$(ms)" > "$REPORTS/crash.json.tmp"
mv "$REPORTS/crash.json.tmp" "$REPORTS/crash.json"
# a power loss: the link goes first, so nothing of the dying host (no FIN, no RST) reaches the others
"$E2E_NODECTL" cut "${HOST#h}"
"$E2E_NODECTL" crash "${HOST#h}"; T_CRASH=$(ms)
say "crashed $HOST (runs $VICTIM)"
# the manager marks the host down (11-15 s here); only then is a reboot a reboot to swarm
end=$(( $(now) + 90 ))
until [ "$(docker node inspect --format '{{.Status.State}}' "$HOST" 2>/dev/null)" = down ]; do
  [ "$(now)" -lt $end ] || { say "timeout: $HOST never marked down"; exit 1; }
  sleep 0.5
done
T_DOWN=$(ms)
say "$HOST marked down"
"$E2E_NODECTL" heal "${HOST#h}"
"$E2E_NODECTL" start "${HOST#h}"; T_START=$(ms)
say "$HOST booting again"
end=$(( $(now) + 120 ))
until [ "$(docker node inspect --format '{{.Status.State}}' "$HOST" 2>/dev/null)" = ready ]; do
  [ "$(now)" -lt $end ] || { say "timeout: $HOST not ready again"; exit 1; }
  sleep 0.5
done
T_READY=$(ms)
say "$HOST ready"
printf '{"t0":%s,"demoDone":%s,"loadDone":%s,"baselineDone":%s,"crash":%s,"hostDown":%s,"hostStart":%s,"hostReady":%s,"victim":"%s","host":"%s"}\n' \
  "$T0" "$T_DEMO" "$T_LOAD" "$T_BASE" "$T_CRASH" "$T_DOWN" "$T_START" "$T_READY" "$VICTIM" "$HOST" > "$REPORTS/hook.json"
