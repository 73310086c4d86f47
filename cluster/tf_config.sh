#!/usr/bin/env bash
# Multi-worker kmtl training by hand: run this on every machine of the cluster, each with its
# own index (0 = the chief, which writes the run folder and the export):
#
#   machine A:   bash cluster/tf_config.sh 0 configs/my_tasks.yaml
#   machine B:   bash cluster/tf_config.sh 1 configs/my_tasks.yaml
#
# WORKERS lists every worker's host:port in the same order on every machine (the port must be
# open between the machines). kmtl sees TF_CONFIG and trains under TensorFlow's
# MultiWorkerMirroredStrategy (training.strategy: auto or multi_worker); each worker reads its
# own shard of every task. The data files must be at the same paths on every machine, and
# output_dir on a disk the chief can write (a shared one if you want to read it elsewhere).
# On one machine, `kmtl train CONFIG --workers 2` does all of this for you.
set -euo pipefail
INDEX=${1:?give the index of this worker: 0 for the chief, 1, 2, ...}
CONFIG=${2:?give the YAML config}
WORKERS=${WORKERS:-"10.0.0.1:12345,10.0.0.2:12345"}
LIST=$(printf '"%s",' ${WORKERS//,/ })
export TF_CONFIG="{\"cluster\": {\"worker\": [${LIST%,}]}, \"task\": {\"type\": \"worker\", \"index\": ${INDEX}}}"
echo "TF_CONFIG=${TF_CONFIG}" >&2
exec kmtl train "${CONFIG}"
