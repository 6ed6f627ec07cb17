#!/usr/bin/env bash
# Distributed evaluation: one tools/test.py process per GPU (or CPU worker), rank 0 evaluates.
#
#   tools/dist_test.sh CONFIG MODEL GPUS [tools/test.py args...]
#   tools/dist_test.sh configs/retinanet/retinanet_r50_fpn_1x_coco.py model.onnx 4 \
#       --backend onnxruntime --device cuda --eval bbox
#
# Environment: PORT (default 29500), NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PYTHON (python) for the interpreter that runs torch.distributed.run (torchrun).
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 CONFIG MODEL GPUS [tools/test.py args...]" >&2
    exit 2
fi
CONFIG=$1
MODEL=$2
GPUS=$3
shift 3

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$TOOLS_DIR/test.py" "$CONFIG" "$MODEL" --launcher pytorch "$@"
