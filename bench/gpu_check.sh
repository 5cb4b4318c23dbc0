#!/usr/bin/env bash
# gpu_check.sh — the CUDA path checked on a GPU machine in one prepared command (issue 15), or
# rehearsed end to end on a machine without one.
#
#   bash bench/gpu_check.sh               # device: build, CUDA tests, memcheck, kernel table, 8B end to end
#   bash bench/gpu_check.sh --part 70b    # device, a second command: synthetic Llama-3.3-70B Q4_K_M end to end
#   bash bench/gpu_check.sh --rehearse    # here: the same steps (CUDA ones skip), a small synthetic file,
#                                         # and a check of everything $OUT would hand back
# Options: --out DIR ($OUT, else out/gpu-check), --wheels DIR (.whl), --budget SECONDS (main 560,
# 70b 570, rehearsal 3600), --data DIR (synthetic files; default /tmp/pylin-gpu-data).
#
# Steps, each under `timeout` with its own budget, all under one deadline so that the script ends
# (report and bundle included) before the device's 10-minute command limit:
#   env      what the machine is (nvidia-smi, nvcc, python packages, disk)
#   wheels   carried wheels (gguf) installed into a folder on PYTHONPATH (no network there)
#   build    pylin built in place for sm_90 only: PYLIN_CUDA=ON, all cores, no build isolation
#   tests    tests/test_cuda.py (kernels x formats x orientations vs float64, the engine on cuda)
#   memcheck compute-sanitizer --tool memcheck over a small kernel subset (uncached torch allocations)
#   kernels  bench/gpu.py's table: Llama-3 8B/70B shapes, M 1..4096, vs cuBLAS float32 and bf16
#   e2e-8b   a synthetic Llama-3-8B Q4_K (written in the background from the start): linearize 16
#            tokens, reconstruction, 64-vector JVP/VJP, top-8 SVD and J_n of the last token
#   (--part 70b: build, the 70B Q4_K_M file (~42 GB) written, then the same end to end)
# Writes into $OUT: summary.txt, gpu-check.json, gpu-<date>-<card>[-70b].json (bench/results'
# format), logs.tar.gz (every log, the JUnit XML, the raw result files).  docs/cuda.md says how to
# run it with the device tool and what to do with what comes back.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD

REHEARSE=0 PART=main BUDGET="" WHEELS=.whl DATA=${PYLIN_DATA:-/tmp/pylin-gpu-data}
OUT_DIR=${OUT:-$REPO/out/gpu-check}
while (($#)); do
  case $1 in
    --rehearse) REHEARSE=1 ;;
    --part) PART=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --data) DATA=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $PART in main|70b) ;; *) echo "gpu_check.sh: --part is main or 70b, got $PART" >&2; exit 2 ;; esac
if ((REHEARSE)); then : "${BUDGET:=3600}"; elif [[ $PART == 70b ]]; then : "${BUDGET:=570}"; else : "${BUDGET:=560}"; fi

WORK=$REPO/build/gpu-check-$PART  # logs, results, the carried wheels' site folder
LOGS=$WORK/logs RESULTS=$WORK/results SITE=$WORK/site
case $(realpath -m "$OUT_DIR") in /|"$REPO") echo "gpu_check.sh: refusing --out $OUT_DIR (it is emptied)" >&2; exit 2 ;; esac
rm -rf "$WORK" && mkdir -p "$LOGS" "$RESULTS" "$SITE" "$OUT_DIR" "$DATA"
RESERVE=25  # seconds kept for the report and the bundle
SCALE=1; ((REHEARSE)) && SCALE=4  # step budgets here: 2 shared cores build ~4x slower than 16
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYLIN_COMMIT=${PYLIN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
NPROC=$(nproc)

# ---- the step runner -----------------------------------------------------------------------------
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >>"$LOGS/steps.tsv"; }

# run_step NAME BUDGET COMMAND: COMMAND (a bash string; $STEP_BUDGET holds its budget) under timeout,
# output to $LOGS/NAME.log; the budget shrinks to what the deadline leaves.  Returns its exit code.
run_step() {
  local name=$1 budget=$(($2 * SCALE)) command=$3 left=$((BUDGET - SECONDS - RESERVE))
  ((budget > left)) && budget=$left
  if ((budget < 10)); then
    record "$name" skipped 0 0 "$budget" "no time left"; echo "== $name: skipped, no time left"; return 99
  fi
  echo "== $name (budget ${budget} s, ${SECONDS} s in)"
  local t0=$SECONDS rc status=ok
  STEP_BUDGET=$budget timeout --signal=INT --kill-after=15 "$budget" bash -c "$command" >"$LOGS/$name.log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && status=timeout
  ((rc != 0)) && [[ $status == ok ]] && status=failed
  record "$name" "$status" "$rc" "$((SECONDS - t0))" "$budget" "$(tail -n 1 "$LOGS/$name.log" | tr '\t' ' ' | cut -c1-160)"
  tail -n 4 "$LOGS/$name.log" | sed 's/^/   /'
  echo "   -> $status (rc $rc, $((SECONDS - t0)) s)"
  return $rc
}
skip() { record "$1" skipped 0 0 0 "$2"; echo "== $1: skipped: $2"; }

# ---- python: the machine's own (device), or a scratch venv over this one's packages (rehearsal) ----
PY=${PYTHON:-python3}
if ((REHEARSE)); then
  VENV=$REPO/build/gpu-check-venv
  if [[ ! -x $VENV/bin/python ]]; then
    "$PY" -m venv "$VENV" || exit 1
    # the invoking interpreter's package folders, except any that holds a pylin (so the scratch venv
    # sees torch, numpy, ... but only the pylin this script builds)
    "$PY" - "$VENV" <<'EOF'
import pathlib, site, sys
dirs = [p for p in sys.path if p.endswith("site-packages") and not (pathlib.Path(p) / "pylin").exists()]
target = next(pathlib.Path(sys.argv[1]).glob("lib/python*/site-packages"))
(target / "zz_gpu_check_deps.pth").write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs))
EOF
  fi
  PY=$VENV/bin/python
fi

# ---- env, wheels, the 8B file in the background, build -------------------------------------------
run_step env 30 "
  echo \"date \$(date -Is)  commit $PYLIN_COMMIT  part $PART  rehearse $REHEARSE  cores $NPROC\"
  nvidia-smi || echo 'nvidia-smi: none'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
  nvcc --version | tail -n 2; cmake --version | head -n 1; df -h $REPO $DATA /tmp; free -g
  $PY -c 'import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, torch.version.cuda, numpy.__version__)'
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|numpy|cupy|transformers|pybind11|scikit-build|cmake|ninja|pytest|gguf) ' || true
"

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  run_step wheels 60 "$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target $SITE $WHEELS/*.whl && ls $SITE"
else
  skip wheels "no $WHEELS/*.whl (carry the gguf wheel: see docs/cuda.md)"
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

# make_synthetic_gguf [--size] MODEL FORMAT PATH [options]
synthetic() { "$PY" bench/make_synthetic_gguf.py "$@"; }
fits() {  # fits BYTES: the data folder has room for BYTES plus 4 GB
  local free; free=$(df -B1 --output=avail "$DATA" | tail -n 1)
  ((free > $1 + (4 << 30)))
}
E8B_PATH=$DATA/llama-3-8b-q4_k.gguf WRITER_PID=""
if [[ $PART == main ]]; then
  layers=""; ((REHEARSE)) && layers="--layers 1"  # here: the embedding, one layer and the head (~0.6 GB)
  size=$(synthetic llama-3-8b Q4_K "$E8B_PATH" --size $layers 2>/dev/null || echo 0)
  if ((size == 0)); then
    skip writer-8b "bench/make_synthetic_gguf.py does not run (gguf missing?)"
  elif [[ -f $E8B_PATH ]] && ! ((REHEARSE)); then
    record writer-8b ok 0 0 0 "$E8B_PATH already there"
  elif fits "$size"; then
    echo "== writer-8b: $E8B_PATH ($((size >> 20)) MiB) in the background"
    (t0=$SECONDS; synthetic llama-3-8b Q4_K "$E8B_PATH" $layers --workers 4 >"$LOGS/writer-8b.log" 2>&1
     rc=$?; record writer-8b "$([[ $rc == 0 ]] && echo ok || echo failed)" $rc $((SECONDS - t0)) 0 \
       "$(tail -n 1 "$LOGS/writer-8b.log")") &
    WRITER_PID=$!
  else
    skip writer-8b "$DATA has no room for $((size >> 30)) GiB"
  fi
fi

installed_sm90() {  # pylin importable, with its CUDA module, built from this tree for sm_90 alone
  "$PY" -c "import pylin, pylin._cuda as c, sys; sys.exit(c.BUILD_INFO['archs'] != '90' or \
    not pylin.__file__.startswith('$REPO/'))" 2>/dev/null
}
if ((REHEARSE)) || ! installed_sm90; then
  run_step build 300 "CMAKE_BUILD_PARALLEL_LEVEL=$NPROC $PY -m pip install -v --no-index --no-build-isolation \
    --no-deps -e . -C build-dir='build/gpu-check-{wheel_tag}' -C cmake.define.PYLIN_CUDA=ON \
    -C cmake.define.PYLIN_CUDA_ARCHITECTURES=90 && cd /tmp && $PY -c 'import pylin; print(pylin.build_info())'"
else
  record build ok 0 0 0 "already built for sm_90 (a warm machine)"
fi
GPU_WHY=$(cd /tmp && "$PY" -c "from pylin import cuda; print(cuda.why_unavailable() or '')" 2>&1 | tail -n 1)
[[ -n $GPU_WHY ]] && echo "== no usable GPU: $GPU_WHY"

# ---- the checks ------------------------------------------------------------------------------------
if [[ $PART == main ]]; then
  xdist=""; [[ -z $GPU_WHY ]] && "$PY" -c "import xdist" 2>/dev/null && xdist="-n 4"
  run_step tests 170 "$PY -m pytest -q -p no:cacheprovider $xdist -rfE --junitxml=$LOGS/tests.xml tests/test_cuda.py"

  SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
  ((REHEARSE)) && SANITIZER=${SANITIZER:-env}  # here: the same pytest selection, without the sanitizer
  if [[ -n $GPU_WHY ]] && ! ((REHEARSE)); then
    skip memcheck "no GPU ($GPU_WHY)"
  elif [[ -z $SANITIZER ]]; then
    skip memcheck "compute-sanitizer not found"
  else  # uncached allocations: an access past a tensor's end falls outside its cudaMalloc block
    subset="wide_vjp or unaligned or (dequantize_bit_exact and (Q4_K or Q2_K or Q3_K or Q5_K or Q6_K or Q4_0 or Q5_1 \
      or F32)) or (float32_matches and Q4_K) or (float64_matches and (Q4_K or F32)) \
      or (tiled_kernels and (Q4_K or Q8_0)) or out_batched"
    [[ $SANITIZER == env ]] && tool="" || tool="--tool memcheck --leak-check no --print-limit 50 --error-exitcode 86"
    run_step memcheck 75 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 $SANITIZER $tool $PY -m pytest -q -p no:cacheprovider \
      -x tests/test_cuda.py -k '$subset' > $LOGS/sanitizer.log 2>&1; rc=\$?; \
      grep -E 'ERROR SUMMARY|passed|failed|skipped' $LOGS/sanitizer.log | tail -n 3; exit \$rc"
  fi

  if ((REHEARSE)); then  # bench/gpu.py's control flow with CPU stand-ins for CUDA (tiny shapes)
    run_step kernels 60 "$PY bench/gpu.py --smoke && $PY bench/gpu_rehearsal.py --formats Q4_K,Q8_0 --m 1,64 \
      --repeats 3 --out-dir $RESULTS --tag kernels --budget-s \$((STEP_BUDGET - 30))"
  elif [[ -n $GPU_WHY ]]; then
    skip kernels "no GPU ($GPU_WHY)"
  else
    run_step kernels 150 "$PY bench/gpu.py --out-dir $RESULTS --tag kernels --budget-s \$((STEP_BUDGET - 30))"
  fi

  if [[ -n $WRITER_PID ]]; then wait "$WRITER_PID"; fi
  if ((REHEARSE)); then  # the file the device reads, loaded by the pylin just built; gpu.py's e2e stand-in
    run_step e2e-8b 120 "cd /tmp && $PY -c \"import pylin; m = pylin.load('$E8B_PATH'); \
      print(m.arch, m.n_layers, m.d_model, m.weights.layers[0].down)\" && cd $REPO && \
      $PY bench/gpu_rehearsal.py --skip-kernels --e2e llama-3-8b:Q4_K --data-dir $WORK --write --workers 2 \
      --tokens 4 --out-dir $RESULTS --tag e2e-8b --budget-s \$((STEP_BUDGET - 45))"
  elif [[ -z $GPU_WHY && -f $E8B_PATH ]]; then
    run_step e2e-8b 110 "$PY bench/gpu.py --skip-kernels --e2e llama-3-8b:Q4_K --data-dir $DATA --tokens 16 \
      --out-dir $RESULTS --tag e2e-8b --budget-s \$((STEP_BUDGET - 45))"
  else
    skip e2e-8b "${GPU_WHY:-no synthetic 8B file}"
  fi
else  # --part 70b
  E70_PATH=$DATA/llama-3.3-70b-q4_k_m.gguf layers=""
  ((REHEARSE)) && { layers="--layers 1"; E70_PATH=$DATA/llama-3.3-70b-1layer-q4_k_m.gguf; }
  size=$(synthetic llama-3.3-70b Q4_K_M "$E70_PATH" --size $layers)
  if [[ -f $E70_PATH ]]; then
    record writer-70b ok 0 0 0 "$E70_PATH already there"
  elif fits "$size"; then
    run_step writer-70b 240 "synthetic() { $PY bench/make_synthetic_gguf.py \"\$@\"; }; \
      synthetic llama-3.3-70b Q4_K_M $E70_PATH $layers --workers $NPROC"
  else
    skip writer-70b "$DATA has no room for $((size >> 30)) GiB: $(df -h --output=avail "$DATA" | tail -n 1) free"
  fi
  if ((REHEARSE)) && [[ -f $E70_PATH ]]; then
    run_step e2e-70b 120 "cd /tmp && $PY -c \"import pylin; m = pylin.load('$E70_PATH'); \
      print(m.arch, m.n_layers, m.d_model, m.weights.layers[0].v, m.weights.layers[0].down)\" && cd $REPO && \
      $PY bench/gpu_rehearsal.py --skip-kernels --e2e llama-3.3-70b:Q4_K_M --data-dir $WORK --write \
      --workers 2 --tokens 4 --out-dir $RESULTS --tag e2e-70b --budget-s \$((STEP_BUDGET - 90))"
  elif [[ -z $GPU_WHY && -f $E70_PATH ]]; then
    run_step e2e-70b 400 "$PY bench/gpu.py --skip-kernels --e2e llama-3.3-70b:Q4_K_M --data-dir $DATA \
      --tokens 16 --out-dir $RESULTS --tag e2e-70b --budget-s \$((STEP_BUDGET - 90))"
  else
    skip e2e-70b "${GPU_WHY:-no synthetic 70B file}"
  fi
fi

# ---- report and bundle -----------------------------------------------------------------------------
rehearse_flag=""; ((REHEARSE)) && rehearse_flag=--rehearse
rm -rf "${OUT_DIR:?}"/*
cp -r "$RESULTS" "$LOGS/raw-results"
python3 bench/gpu_check_report.py summarize --work "$WORK" --out "$OUT_DIR" --part "$PART" $rehearse_flag \
  >"$LOGS/report.log" 2>&1 || echo "report failed: $(tail -n 3 "$LOGS/report.log")"
tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs
if (($(stat -c %s "$OUT_DIR/logs.tar.gz") > (15 << 20))); then  # keep under the 16 MiB a file may be
  find "$LOGS" -type f -size +2M -exec truncate -s 2M {} \;
  tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs
fi
echo "== $OUT_DIR ($SECONDS s in all)"
python3 bench/gpu_check_report.py verify --out "$OUT_DIR" || exit 1
cat "$OUT_DIR/summary.txt" 2>/dev/null
# exit 1 when a step failed or ran out of time (skips are not failures: the summary says why)
! cut -f2 "$LOGS/steps.tsv" | grep -qE '^(failed|timeout)$'
