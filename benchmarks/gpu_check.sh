#!/usr/bin/env bash
# The first GPU: what glm_megatron needs is installed, the single-device tests pass on CUDA, and
# the training step's throughput and MFU, eager and compiled, against transformers'
# GlmForCausalLM (eager and torch.compile), plus the loss's peak memory at GLM-4's
# vocabulary. At most 7.5 minutes on one H200 (the stage limits below); prints markdown
# tables to stdout.
#
#   benchmarks/gpu_check.sh          # on a machine with one CUDA GPU
#   benchmarks/gpu_check.sh --dry    # on CPU with tiny sizes (tests/test_gpu_check.py runs it)
#
# Environment: PYTHON (default python3); GLM_WHEELS, a folder of wheels installed first into a
# private target (for a machine without a package registry: megatron-core is rarely there; see
# benchmarks/README.md, "The first GPU").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
DRY=0
case "${1:-}" in
    --dry) DRY=1 ;;
    "") ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --dry or nothing)" >&2; exit 2 ;;
esac

if [[ -n "${GLM_WHEELS:-}" ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/glm_site "$GLM_WHEELS"/*.whl || { echo "GLM_WHEELS=$GLM_WHEELS: pip could not install them" >&2; exit 2; }
    export PYTHONPATH="/tmp/glm_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if (( DRY )); then
    DEVICE=cpu
    PYTEST_MODE=(--collect-only)   # the selection must exist; the suite runs these on CPU
    TRAINING=(--device cpu --quick --steps 1 --warmup 1 --compile-backend aot_eager)
    LOSS=(--device cpu --vocab-size 4096 --hidden-size 64 --seq-length 128)
    LIMITS=(600 600 600)           # a shared CPU can be slow; nothing to fit here
else
    DEVICE=cuda
    PYTEST_MODE=()
    # ~1.3B parameters (0.7B in the layers), GLM-4's architecture and vocabulary, seq 4096.
    TRAINING=(--device cuda --num-layers 16 --hidden-size 2048 --num-attention-heads 16
              --num-query-groups 2 --ffn-hidden-size 5632 --vocab-size 151552
              --seq-length 4096 --micro-batch-size 1 --steps 10 --warmup 3)
    LOSS=(--device cuda)           # vocab 151552, hidden 4096, seq 4096, bf16
    # Caps in seconds per stage (8.5 minutes in all); the training stage times four sides, two
    # of them compiled (ours layer by layer, transformers whole), not yet measured on a GPU.
    LIMITS=(120 270 60)
fi

OUT_DIR="$(mktemp -d)"
trap 'rm -rf "$OUT_DIR"' EXIT
FAILED=()

echo "## GPU check ($( ((DRY)) && echo "dry run on CPU" || echo "CUDA" ))"
echo
echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo

# 1. What is installed ---------------------------------------------------------------------
"$PYTHON" -W ignore - "$DEVICE" <<'EOF' || { echo "gpu_check.sh: install what is missing above, then rerun" >&2; exit 3; }
import importlib, sys

device = sys.argv[1]
required = {"torch": "torch", "megatron.core": "megatron-core (a cp312 wheel via GLM_WHEELS)",
            "transformers": "transformers", "sentencepiece": "sentencepiece",
            "numpy": "numpy", "tensorboard": "tensorboard", "tqdm": "tqdm",
            "pytest": "pytest", "safetensors": "safetensors"}
optional = {"apex": "NVIDIA apex (fused norms)",
            "transformer_engine": "NVIDIA Transformer Engine (fused norms)"}
missing = []
for module, package in {**required, **optional}.items():
    try:
        found = importlib.import_module(module)
        version = getattr(found, "__version__", "")
        print(f"- {module}: {version or 'present'}")
    except Exception as error:  # a broken install is as missing as an absent one
        print(f"- {module}: MISSING ({type(error).__name__}: {error})".splitlines()[0])
        if module in required:
            missing.append(package)
import torch
if device == "cuda":
    if not torch.cuda.is_available():
        missing.append(f"a CUDA build of torch that sees a GPU (this torch {torch.__version__})")
    else:
        p = torch.cuda.get_device_properties(0)
        print(f"- GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
              f"{p.major}.{p.minor}; torch CUDA {torch.version.cuda}")
if missing:
    print(f"missing: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
try:
    from transformers import GlmForCausalLM  # noqa: F401
except ImportError as error:
    print(f"transformers has no GlmForCausalLM ({error}); install transformers >= 4.57",
          file=sys.stderr)
    sys.exit(1)
EOF
echo

# 2. The tests that run on one CUDA device ------------------------------------------------
echo "### Tests on $DEVICE"
echo
echo '```'
GLM_TEST_DEVICE=$DEVICE timeout "${LIMITS[0]}" "$PYTHON" -m pytest -q -x --tb=short -p no:cacheprovider \
    "${PYTEST_MODE[@]}" -W ignore -k "not tensor_parallel_2" \
    tests/test_device.py tests/test_cross_entropy.py tests/test_model.py tests/test_recompute.py \
    2>&1 || FAILED+=("tests (exit $?; 124: over ${LIMITS[0]} s)")
echo '```'
echo

# 3. Training throughput and MFU: ours, transformers eager, transformers compiled ---------
echo "### Training step, bf16"
echo
timeout "${LIMITS[1]}" "$PYTHON" benchmarks/bench_training.py "${TRAINING[@]}" --dtypes bf16 \
    --markdown-out "$OUT_DIR/training.md" > "$OUT_DIR/training.log" 2>&1 \
    && cat "$OUT_DIR/training.md" \
    || { FAILED+=("bench_training (exit $?; 124: over ${LIMITS[1]} s)"); tail -n 30 "$OUT_DIR/training.log"; }
echo

# 4. Peak memory of the loss at GLM-4's vocabulary ----------------------------------------
echo "### Loss peak memory"
echo
timeout "${LIMITS[2]}" "$PYTHON" benchmarks/bench_loss_memory.py "${LOSS[@]}" \
    --markdown-out "$OUT_DIR/loss.md" > "$OUT_DIR/loss.log" 2>&1 \
    && cat "$OUT_DIR/loss.md" \
    || { FAILED+=("bench_loss_memory (exit $?; 124: over ${LIMITS[2]} s)"); tail -n 30 "$OUT_DIR/loss.log"; }
echo

if (( ${#FAILED[@]} )); then
    printf 'gpu_check.sh: failed: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
echo "gpu_check.sh: all stages passed"
