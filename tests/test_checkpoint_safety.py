"""Checkpoints a long run can rely on: --save and --tensorboard-dir checked before the first
iteration, damaged checkpoints named with the iteration to fall back to, one run per --save
(a lock that a crash leaves recognisably stale), durable saves (fsync before the tracker
moves, no space left named), leftovers cleared, retention, and the metadata format (typed,
versioned, migrated from format 1, readable without megatron-core)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from cli import QUICK, ROOT, run_pretrain, start_pretrain, wait_for_line
from glm_testing import make_trainer, tiny_config

TB = ["--tensorboard-dir"]


def _one_error(result, code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


# --save and --tensorboard-dir, before the first iteration ------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write into: permissions for a user, a read-only mount for
    root (whom permissions do not stop)."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("running as root without permission to mount: no read-only folder")
    yield path
    subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("flag", ["--save", "--tensorboard-dir"])
def test_output_that_is_a_file(tmp_path, flag):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    other = {"--save": TB + [str(tmp_path / "tb")], "--tensorboard-dir": ["--save",
                                                                       str(tmp_path / "s")]}
    result = run_pretrain(QUICK + ["--train-iters", "2", flag, str(target)] + other[flag])
    assert f"{flag} {target} is a file; give a directory" in _one_error(result)
    assert "iteration" not in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_save_in_a_read_only_folder(tmp_path, read_only_dir):
    save = read_only_dir / "checkpoints"
    result = run_pretrain(QUICK + ["--train-iters", "2", "--save", str(save)] + TB +
                          [str(tmp_path / "tb")])
    assert f"--save {save}: {read_only_dir} is not writable" in _one_error(result)
    assert "iteration" not in result.stdout and not (tmp_path / "tb").exists()


# Damaged checkpoints --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> str:
    """Iterations 2 and 4 of a quick run."""
    save = str(tmp_path_factory.mktemp("saved") / "ckpt")
    result = run_pretrain(QUICK + ["--train-iters", "4", "--save-interval", "2", "--save", save])
    assert result.returncode == 0, result.stderr[-3000:]
    return save


def _flip_bytes(path: str):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 64)


ITER4 = "iter_0000004"
DAMAGE = [
    ("truncated-model", lambda d: os.truncate(f"{d}/{ITER4}/mp_rank_00/model_optim_rng.pt", 900),
     f"{ITER4}/mp_rank_00/model_optim_rng.pt is truncated or corrupt", ""),
    ("corrupt-model", lambda d: _flip_bytes(f"{d}/{ITER4}/mp_rank_00/model_optim_rng.pt"),
     f"{ITER4}/mp_rank_00/model_optim_rng.pt is corrupt", ""),
    ("missing-rank-dir", lambda d: shutil.rmtree(f"{d}/{ITER4}/mp_rank_00"),
     f"{ITER4}/mp_rank_00/model_optim_rng.pt is missing", ""),
    ("garbage-metadata", lambda d: open(f"{d}/{ITER4}/metadata.json", "w").write("{garbage"),
     f"{ITER4}/metadata.json cannot be read", ""),
    ("missing-optimizer", lambda d: os.unlink(f"{d}/{ITER4}/mp_rank_00/optimizer_dp000.pt"),
     f"{ITER4}/mp_rank_00/optimizer_dp000.pt is missing", "--no-load-optim"),
    ("missing-rng", lambda d: shutil.rmtree(f"{d}/{ITER4}/rng"),
     f"{ITER4}/rng/rank_00000.pt is missing", "--no-load-rng"),
]


@pytest.mark.parametrize("name,damage,message,accept", [
    pytest.param(*case, marks=[pytest.mark.slow] if case[0] != "missing-optimizer" else [])
    for case in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_checkpoint_names_the_file_and_the_fallback(tmp_path, saved_run, name, damage,
                                                            message, accept):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved_run, ckpt)
    damage(ckpt)
    resume = QUICK + ["--train-iters", "4", "--load", ckpt] + TB + [str(tmp_path / "tb")]
    error = _one_error(run_pretrain(resume))
    assert message in error
    assert "the newest complete earlier iteration is 2: load it with --ckpt-step 2" in error
    if accept:
        assert f"or pass {accept} to continue" in error
        accepted = run_pretrain(resume + [accept])
        assert accepted.returncode == 0, accepted.stderr[-3000:]
        assert "loaded" in accepted.stdout and "at iteration 4" in accepted.stdout
    if name == "missing-optimizer":  # the fallback it names loads (iteration 2 is whole)
        fallback = run_pretrain(resume + ["--ckpt-step", "2"])
        assert fallback.returncode == 0, fallback.stderr[-3000:]
        assert "at iteration 2 " in fallback.stdout


@pytest.mark.slow
def test_a_file_only_one_rank_reads_stops_every_rank(tmp_path):
    """Rank 1 alone finds its RNG file missing: both ranks stop together with its line, instead
    of rank 0 waiting in the next collective."""
    ckpt = str(tmp_path / "ckpt")
    common = QUICK + ["--train-iters", "2"] + TB + [str(tmp_path / "tb")]
    saved = run_pretrain(common + ["--save", ckpt], nproc=2)
    assert saved.returncode == 0, saved.stderr[-3000:]
    os.unlink(os.path.join(ckpt, "iter_0000002", "rng", "rank_00001.pt"))
    started = time.monotonic()
    resumed = run_pretrain(common + ["--load", ckpt, "--distributed-timeout-minutes", "3"],
                           nproc=2)
    assert time.monotonic() - started < 150  # not a collective's timeout (180 s)
    errors = [line for line in resumed.stderr.splitlines() if "pretrain_glm.py: error:" in line]
    assert len(errors) == 1 and "iter_0000002/rng/rank_00001.pt is missing" in errors[0]
    assert resumed.returncode != 0 and "exitcode  : 2" in resumed.stderr


def test_tracker_naming_a_missing_iteration(tmp_path, saved_run):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved_run, ckpt)
    with open(os.path.join(ckpt, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("7")
    error = _one_error(run_pretrain(QUICK + ["--train-iters", "4", "--load", ckpt]))
    assert "iter_0000007, named by its latest_checkpointed_iteration.txt, does not exist; " \
           "the newest complete earlier iteration is 4: load it with --ckpt-step 4" in error


def test_reshard_refuses_a_checkpoint_whose_optimizer_file_is_missing(tmp_path, saved_run):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved_run, ckpt)
    os.unlink(os.path.join(ckpt, ITER4, "mp_rank_00", "optimizer_dp000.pt"))
    command = [sys.executable, os.path.join(ROOT, "tools", "checkpoint", "reshard.py"),
               "--no-progress", "--load-dir", ckpt, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "2"]
    refused = subprocess.run(command + ["--save-dir", str(tmp_path / "out")],
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert "optimizer_dp000.pt is missing: the checkpoint's optimizer state is incomplete; " \
           "pass --no-optimizer to reshard the weights only" in refused.stderr
    assert not (tmp_path / "out").exists()
    weights = subprocess.run(command + ["--save-dir", str(tmp_path / "out"), "--no-optimizer"],
                             capture_output=True, text=True)
    assert weights.returncode == 0, weights.stderr


# One run per --save --------------------------------------------------------------------------
def test_lock_refuses_a_second_run_and_a_crash_leaves_it_stale(tmp_path):
    save, log = tmp_path / "save", str(tmp_path / "first.txt")
    quick = QUICK + ["--train-iters", "2"] + TB + [str(tmp_path / "tb")]
    first = start_pretrain(QUICK + ["--train-iters", "100000", "--save", str(save)], log)
    try:
        wait_for_line(log, r"iteration\s+1/", first)
        second = run_pretrain(quick + ["--save", str(save)])
        assert f"--save {save} is in use by another run (pid {first.pid} on host" in \
            _one_error(second)
    finally:
        first.kill()  # SIGKILL: no chance to release the lock
        first.wait()
    assert (save / "run.lock").exists()
    third = run_pretrain(quick + ["--save", str(save)])
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"removed the stale lock of pid {first.pid}" in third.stdout
    assert not (save / "run.lock").exists()  # released at exit


def _write_lock(root, **holder):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "run.lock"), "w") as f:
        json.dump(holder, f)


def test_lock_of_another_host_is_stale_once_its_heartbeat_is_old(tmp_path):
    from glm_megatron.checkpoint_format import CheckpointError
    from glm_megatron.training.save_directory import STALE_AFTER_SECONDS, SaveLock
    root = str(tmp_path / "save")
    _write_lock(root, pid=1, host="elsewhere", start="1")
    with pytest.raises(CheckpointError, match="in use by another run .pid 1 on host elsewhere"):
        SaveLock(root).acquire()
    old = time.time() - STALE_AFTER_SECONDS - 5
    os.utime(os.path.join(root, "run.lock"), (old, old))
    lock = SaveLock(root)
    assert "removed the stale lock of pid 1 on host elsewhere" in lock.acquire()
    with open(os.path.join(root, "run.lock")) as f:
        assert json.load(f)["pid"] == os.getpid()
    lock.release()
    assert os.listdir(root) == []


def test_lock_of_a_dead_or_reused_pid_on_this_host_is_stale(tmp_path):
    import socket
    from glm_megatron.training.save_directory import SaveLock
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    root = str(tmp_path / "save")
    _write_lock(root, pid=int(done.stdout), host=socket.gethostname(), start="1")
    lock = SaveLock(root)
    assert lock.acquire() is not None  # its pid is gone
    lock.release()
    # Our own pid, but another process start: the pid was reused.
    _write_lock(root, pid=os.getpid(), host=socket.gethostname(), start="-1")
    lock = SaveLock(root)
    assert lock.acquire() is not None
    lock.release()
    # A live holder on this host keeps it; releasing someone else's lock leaves it alone.
    holder = SaveLock(root)
    holder.acquire()
    from glm_megatron.checkpoint_format import CheckpointError
    with pytest.raises(CheckpointError):
        SaveLock(root).acquire()
    SaveLock(root).release()
    assert os.path.exists(os.path.join(root, "run.lock"))
    holder.release()
    assert not os.path.exists(os.path.join(root, "run.lock"))


# Leftovers and retention ----------------------------------------------------------------------
def test_leftovers_are_cleared_and_old_checkpoints_pruned(tmp_path):
    save = tmp_path / "save"
    (save / ".staging_iter_0000009" / "mp_rank_00").mkdir(parents=True)
    (save / "latest_checkpointed_iteration.txt.tmp-4242-0a1b2c3d").write_text("9")
    result = run_pretrain(QUICK + ["--train-iters", "4", "--save-interval", "1",
                                   "--keep-last-checkpoints", "2", "--save", str(save)] + TB +
                          [str(tmp_path / "tb")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"removed {save}/.staging_iter_0000009" in result.stdout
    assert sorted(os.listdir(save)) == ["iter_0000003", "iter_0000004",
                                        "latest_checkpointed_iteration.txt"]
    assert "(--keep-last-checkpoints 2)" in result.stdout


def test_an_interrupted_resave_is_put_back(tmp_path):
    from glm_megatron.training.save_directory import remove_leftovers
    (tmp_path / "iter_0000002.replaced").mkdir()
    (tmp_path / "iter_0000004").mkdir()
    (tmp_path / "iter_0000004.replaced").mkdir()
    done = remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["iter_0000002", "iter_0000004"]
    assert done == [f"restored {tmp_path}/iter_0000002", f"removed {tmp_path}/iter_0000004.replaced"]


# Durable saves --------------------------------------------------------------------------------
def _tiny_job(ctx):
    from glm_megatron.model.builder import build_model_chunks
    config = tiny_config("chatglm3-tiny")
    model = build_model_chunks(config, ctx, 7)
    return config, model, make_trainer(ctx, model, 1).optimizer


def test_every_file_and_directory_is_fsynced_before_the_tracker_moves(tmp_path, ctx,
                                                                     monkeypatch):
    from glm_megatron.training import checkpointing
    config, model, optimizer = _tiny_job(ctx)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    root = str(tmp_path / "ckpt")
    checkpointing.save_checkpoint(root, checkpointing.TrainingState(5, 10), model, optimizer,
                                  None, config, ctx)
    tracker_moved = events.index(("replace", "latest_checkpointed_iteration.txt"))
    synced = {path for kind, path in events[:tracker_moved] if kind == "fsync"}
    final, staging = os.path.join(root, "iter_0000005"), os.path.join(root,
                                                                       ".staging_iter_0000005")
    saved = {root}
    for folder, _, files in os.walk(final):
        saved.add(folder.replace(final, staging))
        saved.update(os.path.join(folder, f).replace(final, staging) for f in files)
    saved.discard(os.path.join(staging, "metadata.json"))  # written as a temporary, renamed
    assert saved <= synced, saved - synced
    assert any(p.startswith(os.path.join(staging, "metadata.json.tmp")) for p in synced)


def test_a_full_disk_is_named_and_leaves_the_previous_checkpoint(tmp_path, ctx, monkeypatch):
    import builtins
    from glm_megatron.checkpoint_format import CheckpointError
    from glm_megatron.training import checkpointing
    config, model, optimizer = _tiny_job(ctx)
    root = str(tmp_path / "ckpt")
    checkpointing.save_checkpoint(root, checkpointing.TrainingState(1, 1), model, optimizer,
                                  None, config, ctx)

    def full_disk_open(path, *args, **kwargs):  # the kernel's own ENOSPC, from /dev/full
        if str(path).endswith("optimizer_dp000.pt"):
            path = "/dev/full"
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "open", full_disk_open, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot write .*/\.staging_iter_0000002/"
                                              r"mp_rank_00/optimizer_dp000\.pt: no space left "
                                              r"on device"):
        checkpointing.save_checkpoint(root, checkpointing.TrainingState(2, 2), model, optimizer,
                                      None, config, ctx)
    assert sorted(os.listdir(root)) == ["iter_0000001", "latest_checkpointed_iteration.txt"]


# The metadata format --------------------------------------------------------------------------
def _as_format_1(iter_dir: str, args: dict):
    """Rewrite a checkpoint's metadata.json as format 1 wrote it: the argparse namespace."""
    path = os.path.join(iter_dir, "metadata.json")
    with open(path) as f:
        metadata = json.load(f)
    old = {"format_version": 1, "iteration": metadata["iteration"],
           "consumed_samples": metadata["consumed_samples"],
           "layout": {k: metadata["layout"][k] for k in ("tensor", "pipeline", "data")},
           "config": metadata["config"], "args": args}
    with open(path, "w") as f:
        json.dump(old, f)


def test_format_1_checkpoints_keep_loading(tmp_path, saved_run):
    from glm_megatron import arguments
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved_run, ckpt)
    args = vars(arguments.parse_args(QUICK + ["--train-iters", "4", "--save", saved_run]))
    args["tokenizer_model"] = "/old/place/tokenizer.model"
    _as_format_1(os.path.join(ckpt, ITER4), args)
    from glm_megatron.checkpoint_format import read_metadata
    migrated = read_metadata(os.path.join(ckpt, ITER4))
    assert migrated.format_version == 2 and migrated.tokenizer.path == args["tokenizer_model"]
    assert (migrated.data.seq_length, migrated.data.global_batch_size) == (64, 4)
    assert (migrated.schedule.train_iters, migrated.schedule.lr_decay_iters) == (4, 4)
    assert migrated.contents.optimizer and migrated.contents.rng
    resumed = run_pretrain(QUICK + ["--train-iters", "6", "--load", ckpt, "--save", ckpt,
                                    "--override-opt_param-scheduler"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at iteration 4 " in resumed.stdout
    changed = run_pretrain(QUICK + ["--train-iters", "4", "--seq-length", "32", "--load", ckpt,
                                    "--ckpt-step", "4"])
    assert "--seq-length 32 (checkpoint: 64)" in _one_error(changed)


def test_metadata_names_no_flags_and_reads_without_megatron_core(saved_run):
    """Format 2 holds typed records, not the flag namespace, and reads without importing
    megatron-core (or the flag parser)."""
    with open(os.path.join(saved_run, ITER4, "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["format_version"] == 2 and "args" not in metadata
    assert set(metadata) == {"format_version", "iteration", "consumed_samples", "config",
                             "layout", "contents", "tokenizer", "data", "schedule",
                             "precision", "converted_from", "hf_layout", "finetune"}
    # What a checkpoint holds is known without megatron-core (or the flag parser); validating
    # its tensors needs the model's schema, which needs the model's layers.
    probe = ("import sys; sys.modules['megatron'] = None; "
             "sys.modules['glm_megatron.arguments'] = None; "
             "from glm_megatron.checkpoint_format import find_checkpoint, recorded_tokenizer; "
             f"_, m = find_checkpoint({saved_run!r}); "
             "print(m.iteration, recorded_tokenizer(m) is not None, m.contents.optimizer)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["4", "True", "True"]


def test_a_newer_format_or_unknown_fields_are_refused(tmp_path, saved_run):
    from glm_megatron.checkpoint_format import CheckpointError, read_metadata
    iter_dir = str(tmp_path / ITER4)
    shutil.copytree(os.path.join(saved_run, ITER4), iter_dir)
    path = os.path.join(iter_dir, "metadata.json")
    with open(path) as f:
        metadata = json.load(f)
    for change, message in [({"format_version": 3}, "format version 3 is newer"),
                            ({"layout": dict(metadata["layout"], rings=2)},
                             r"unknown fields \['rings'\] in 'Layout'")]:
        with open(path, "w") as f:
            json.dump({**metadata, **change}, f)
        with pytest.raises(CheckpointError, match=message):
            read_metadata(iter_dir)


# Resume checks --------------------------------------------------------------------------------
def test_resume_with_another_data_stream_needs_the_override(tmp_path, saved_run):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved_run, ckpt)
    resume = QUICK + ["--train-iters", "4", "--load", ckpt] + TB + [str(tmp_path / "tb")]
    error = _one_error(run_pretrain(resume + ["--global-batch-size", "8"]))
    assert "--global-batch-size 8 (checkpoint: 4)" in error and "--override-data-settings" in error
    accepted = run_pretrain(resume + ["--global-batch-size", "8", "--override-data-settings"])
    assert accepted.returncode == 0, accepted.stderr[-3000:]
