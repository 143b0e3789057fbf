"""benchmarks/gpu_check.sh runs: its dry mode (CPU, tiny sizes) goes through every stage the
GPU run has (installed packages, the CUDA test selection, both benchmarks), so that the script
is known to work on the day a GPU is there."""

import os
import subprocess
import sys

from cli import ROOT


def test_dry_run_passes_every_stage():
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry"],
                            cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "- megatron.core: " in out and "- transformers: " in out
    assert "tests/test_device.py::test_bf16_training_learns_and_its_checkpoint_resumes_on_cpu" in out
    for side in ("| bf16 | ours |", "| bf16 | ours-compile |", "| bf16 | transformers |",
                 "| bf16 | transformers-compile |"):
        assert side in out, side
    for method in ("| materialised |", "| logits |", "| chunked |"):
        assert method in out, method
    assert out.rstrip().endswith("gpu_check.sh: all stages passed")


def test_unknown_argument_is_refused():
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--gpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown argument '--gpu'" in result.stderr


def test_missing_package_is_named(tmp_path):
    """A package that does not import stops the script before any stage, naming it."""
    (tmp_path / "megatron").mkdir()
    (tmp_path / "megatron" / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry"],
                            cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable,
                                               PYTHONPATH=str(tmp_path)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "- megatron.core: MISSING" in result.stdout
    assert "missing: megatron-core" in result.stderr
    assert "### Tests" not in result.stdout
