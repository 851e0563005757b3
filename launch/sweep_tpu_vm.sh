#!/usr/bin/env bash
# A hyper-parameter sweep on Cloud TPU VMs (or any machines reachable by ssh): each VM runs a sweep worker in a loop
# that restarts it after a crash or a maintenance event, all sharing one Optuna study. See README.md
# ("Hyper-parameter search") and launch/README.md ("Sweeps").
#
#   # on one VM, in the checkout (the loop itself):
#   WORKDIR=/mnt/shared/runs/sweep_glyphs TRIALS=40 launch/sweep_tpu_vm.sh loop --config=configs/glyphs.py
#   # from a workstation, on several single-host TPU VMs (after `launch/tpu_pod.sh setup` on each):
#   ZONE=us-central2-b VMS="tpu-a tpu-b tpu-c" WORKDIR=/mnt/shared/runs/sweep_glyphs TRIALS=40 \
#       STORAGE=postgresql://user:password@10.0.0.5/optuna launch/sweep_tpu_vm.sh start --config=configs/glyphs.py
#   DRY_RUN=1 WORKDIR=/tmp/sweep launch/sweep_tpu_vm.sh loop --config=configs/glyphs.py   # print, run nothing
#
# Storage: STORAGE if set (PostgreSQL, e.g. Cloud SQL: heartbeats retry the trial of a VM that vanished), else the
# journal file WORKDIR/study.log, which needs WORKDIR on a filesystem every VM mounts (Filestore, NFS).
set -euo pipefail

WORKDIR="${WORKDIR:?set WORKDIR to the sweep directory (shared by every VM)}"
TRIALS="${TRIALS:-20}"
STORAGE="${STORAGE:-journal:$WORKDIR/study.log}"
PYTHON="${PYTHON:-.venv/bin/python}"
REMOTE_DIR="${REMOTE_DIR:-metriclearn}"    # the checkout on each VM, relative to the home directory
MAX_RESTARTS="${MAX_RESTARTS:-20}"

sweep_command() {
  printf '%q ' "$PYTHON" -m metriclearn.sweep --workdir="$WORKDIR" --trials="$TRIALS" --storage="$STORAGE" "$@"
}

case "${1:-}" in
  loop)
    shift
    for ((attempt = 1; attempt <= MAX_RESTARTS; attempt++)); do
      if [ -n "${DRY_RUN:-}" ]; then sweep_command "$@"; echo; exit 0; fi
      # The worker exits 0 once the study holds TRIALS finished trials; otherwise restart it (it resumes the study).
      if eval "$(sweep_command "$@")"; then exit 0; fi
      echo "sweep worker exited with an error (attempt $attempt of $MAX_RESTARTS); restarting in 30 s" >&2
      sleep 30
    done
    exit 1
    ;;
  start)
    shift
    : "${VMS:?set VMS to the TPU VM names, space-separated}" "${ZONE:?set ZONE}"
    args=$(printf ' %q' "$@")
    for vm in $VMS; do
      remote="cd ~/$REMOTE_DIR && WORKDIR=$(printf '%q' "$WORKDIR") TRIALS=$TRIALS STORAGE=$(printf '%q' "$STORAGE") \
nohup launch/sweep_tpu_vm.sh loop$args > ~/metriclearn_sweep.log 2>&1 < /dev/null &"
      ${DRY_RUN:+echo} gcloud compute tpus tpu-vm ssh "$vm" --zone="$ZONE" --worker=0 --command="$remote"
    done
    ;;
  *)
    echo "usage: $0 loop|start --config=configs/<recipe>.py[:arg] [--config.key=value ...]" >&2
    exit 2
    ;;
esac
