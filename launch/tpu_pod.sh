#!/usr/bin/env bash
# Multi-host training on a Cloud TPU VM pod slice: the same command on every host, JAX's distributed runtime
# (`--distributed`: jax.distributed.initialize() reads the pod's topology from the TPU VM metadata, no addresses
# needed). See launch/README.md ("TPU VM pod"). Not run by the project's tests: it needs a TPU pod and gcloud.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh setup          # copy this checkout, install, on every host
#   TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/cars_ms launch/tpu_pod.sh train \
#       --config=configs/cars.py:ms --config.dataset.data_dir=/mnt/shared/data/cars196 \
#       --config.model.pretrained=/mnt/shared/weights/resnet50-0676ba61.pth
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh logs           # follow host 0's log
#
# Rerunning `train` with the same WORKDIR resumes from the latest checkpoint in it.
set -euo pipefail

TPU_NAME="${TPU_NAME:?set TPU_NAME to the TPU VM (pod slice) name}"
ZONE="${ZONE:?set ZONE to the zone of the TPU}"
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
REMOTE_DIR="${REMOTE_DIR:-metriclearn}"  # the checkout on every host, relative to the home directory
LOG="${LOG:-metriclearn_train.log}"      # each host's own log, in its home directory
JAX_VERSION="${JAX_VERSION:-0.10.2}"     # pyproject.toml's pin
PYTHON="${PYTHON:-python3}"              # on the hosts: Python >= 3.11 with venv (e.g. PYTHON=python3.11)

on_all_hosts() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all --command="$1"
}

case "${1:-}" in
  setup)
    # The same code on every host: a copy of this checkout (without runs and virtual environments).
    tar --exclude=.git --exclude=runs --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' \
        -czf /tmp/metriclearn.tar.gz -C "$(dirname "$0")/.." .
    gcloud compute tpus tpu-vm scp /tmp/metriclearn.tar.gz "$TPU_NAME:metriclearn.tar.gz" --zone="$ZONE" \
        --project="$PROJECT" --worker=all
    on_all_hosts "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/metriclearn.tar.gz -C ~/$REMOTE_DIR \
        && $PYTHON -m venv ~/$REMOTE_DIR/.venv && ~/$REMOTE_DIR/.venv/bin/pip install -q -e ~/$REMOTE_DIR \
        && ~/$REMOTE_DIR/.venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION'"
    ;;
  train)
    shift
    WORKDIR="${WORKDIR:?set WORKDIR to a directory every host reaches at the same path (shared filesystem)}"
    args=""
    if [ $# -gt 0 ]; then args=$(printf ' %q' "$@"); fi  # quoted for the remote shell
    # Detached (nohup), so that the run survives the ssh session; every host logs to its own ~/$LOG.
    on_all_hosts "cd ~/$REMOTE_DIR && nohup .venv/bin/python -m metriclearn.main --distributed \
        --workdir=$(printf '%q' "$WORKDIR")$args > ~/$LOG 2>&1 < /dev/null &"
    echo "started on every host of $TPU_NAME; follow it with: $0 logs"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=0 \
        --command="tail -n 100 -f ~/$LOG"
    ;;
  *)
    echo "usage: $0 setup | train --config=configs/<recipe>.py[:arg] [--config.key=value ...] | logs" >&2
    exit 2
    ;;
esac
