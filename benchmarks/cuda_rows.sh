#!/usr/bin/env bash
# The GPU rows of the eSCN, Gaunt and Hessian benchmarks, in one run of a few minutes.
#
#     benchmarks/cuda_rows.sh OUTDIR        # writes OUTDIR/*.json and OUTDIR/cuda_rows.log
#
# Needs a CUDA build of torch, molsym importable and the 3BPA data ($MOLSYM_DATA, see
# benchmarks/systems.py). FAIRCHEM_DIR, if set, is a folder holding fairchem's uma/nn
# so2_layers.py, radial.py and matmul.py (the fairchem column; else fairchem must be importable).
# Each part has its own time limit (seconds, second argument: a scale factor for all of them), and
# every script writes its JSON after each row, so a part stopped at its limit keeps what it measured.
set -u
out=${1:?usage: benchmarks/cuda_rows.sh OUTDIR [TIME_SCALE] [PARTS]}
scale=${2:-1}
parts=${3:-"escn fairchem gaunt basis hessian"}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
log="$out/cuda_rows.log"
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}  # DEVICE=cpu: the same parts on CPU (a dry run of the script)
export PYTHONUNBUFFERED=1
limit() { awk -v s="$1" -v f="$scale" 'BEGIN { printf "%d", s * f }'; }
part() {  # part NAME SECONDS command...
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  echo "== $name (limit ${seconds} s) $(date -u +%T)" | tee -a "$log"
  local start=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$log"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$py" -c "import torch, e3nn; print('torch', torch.__version__, 'e3nn', e3nn.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$log"
for p in $parts; do
  case $p in
    escn) part escn 120 "$py" "$here/bench_escn.py" --device "$dev" --lmax 1 2 3 4 5 6 7 8 --e3nn-max-l 6 \
            --repeats 11 --warmup 2 --json "$out/escn_cuda.json" ;;
    fairchem) part fairchem 60 "$py" "$here/bench_escn_fairchem.py" --device "$dev" --repeats 21 \
            ${FAIRCHEM_DIR:+--fairchem-dir "$FAIRCHEM_DIR"} --json "$out/escn_fairchem_cuda.json" ;;
    gaunt) part gaunt 150 "$py" "$here/bench_gaunt.py" --device "$dev" --lmax 1 2 3 4 5 6 7 8 9 10 --channels 1 16 \
            --max-l-16 10 --e3nn-max-l 10 --e3nn-max-s 5 --dense-max-l 10 --dense-max-l-16 8 --repeats 11 --warmup 2 \
            --json "$out/gaunt_cuda.json" ;;
    basis) part basis 60 "$py" "$here/bench_gaunt_basis.py" --device "$dev" --no-mace --lmax 4 --channels 16 64 \
            --nodes 10000 --repeats 11 --warmup 2 --json "$out/gaunt_basis_cuda.json" ;;
    hessian) part hessian 150 "$py" "$here/bench_hessian.py" --device "$dev" --sizes 10 27 100 300 \
            --families tensornet e3nn escn gaunt --dtypes float64 float32 --repeats 5 --autograd-repeats 3 \
            --chunk 128 --output "$out/hessian_cuda.json" ;;
    *) echo "unknown part $p (escn fairchem gaunt basis hessian)" | tee -a "$log"; exit 2 ;;
  esac
done
