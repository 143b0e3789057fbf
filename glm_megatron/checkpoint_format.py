"""The checkpoint format, stated once: directory layout, file names, tracker and the typed,
versioned metadata. Training (training/checkpointing.py), the converters
(convert/checkpoint.py), resharding and tools/generate.py all go through it. It imports
neither torch nor megatron-core, so the tools start fast.

    ROOT/latest_checkpointed_iteration.txt     tracker: the newest complete iteration
    ROOT/iter_0000100/metadata.json            CheckpointMetadata (below)
    ROOT/iter_0000100/mp_rank_TT[_PPP]/model_optim_rng.pt
        this TP/PP rank's weights, how shards form full tensors, the learning-rate schedule
    ROOT/iter_0000100/mp_rank_TT[_PPP]/optimizer_dpDDD.pt
        optimizer state per parameter name as element ranges: one file without the
        distributed optimizer, one per DP rank with it
    ROOT/iter_0000100/rng/rank_RRRRR.pt        every rank's random states
    ROOT/run.lock                              the training run that owns ROOT (while it runs)

Every .pt file is a torch.save zip archive, so a truncated or corrupted one is found without
unpickling it (`damage`).

Metadata versions: 1 stored the run's argparse namespace as `args`, read back by flag name;
it is migrated on reading. 2 stores typed records whose field names belong to the format, so
renaming a flag changes how a record is filled, never how a checkpoint is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Optional

FORMAT_VERSION = 2
TRACKER = "latest_checkpointed_iteration.txt"
METADATA = "metadata.json"
MODEL_FILE = "model_optim_rng.pt"
OPTIMIZER_PREFIX = "optimizer_dp"
RNG_DIR = "rng"
LOCK_FILE = "run.lock"
STAGING_PREFIX = ".staging_iter_"  # a save in progress (or one a crash interrupted)
REPLACED_SUFFIX = ".replaced"  # the old copy while an iteration is saved again
_ITERATION_DIR = re.compile(r"iter_(\d{7})")


class CheckpointError(ValueError):
    """A checkpoint or checkpoint directory that cannot be used; the message is one line that
    names the file or flag at fault and what to do."""


# Names ------------------------------------------------------------------------------------
def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def staging_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"{STAGING_PREFIX}{iteration:07d}")


def rank_dir_name(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    return f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp_size > 1 else "")


def optimizer_file_name(dp_rank: int) -> str:
    return f"{OPTIMIZER_PREFIX}{dp_rank:03d}.pt"


def rng_file_name(rank: int) -> str:
    return os.path.join(RNG_DIR, f"rank_{rank:05d}.pt")


# Metadata ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How the run that saved was parallelised, and so how its files are cut."""
    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    virtual_stages: int = 1
    first_stage_layers: Optional[int] = None
    last_stage_layers: Optional[int] = None
    distributed_optimizer: bool = False

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipeline * self.data

    @property
    def optimizer_files(self) -> int:
        """optimizer_dpDDD.pt files per TP/PP rank directory."""
        return self.data if self.distributed_optimizer else 1


@dataclass(frozen=True)
class Contents:
    """What was saved beside the weights. A part recorded here but absent is damage."""
    optimizer: bool = False
    rng: bool = False


@dataclass(frozen=True)
class TokenizerRecord:
    path: Optional[str] = None
    sha256: Optional[str] = None  # of the SentencePiece model file
    vocab_size: Optional[int] = None  # before padding
    special_tokens: dict = field(default_factory=dict)  # pad, eos, mask, smask, gmask, sop, ...


@dataclass(frozen=True)
class DataSource:
    prefix: str
    weight: Optional[float] = None  # None: a single dataset
    fingerprint: Optional[str] = None  # identifies the .bin/.idx content wherever it lies


@dataclass(frozen=True)
class DataRecord:
    """What decides the sample stream: a run that resumes with the same record and consumed
    samples reads exactly the samples an uninterrupted run would."""
    sources: Optional[tuple[DataSource, ...]] = None  # None: not recorded (format 1)
    split: Optional[str] = None
    seq_length: Optional[int] = None
    seed: Optional[int] = None
    objective: Optional[str] = None
    global_batch_size: Optional[int] = None
    micro_batch_size: Optional[int] = None
    # GLM's [CLS] before every sample (--prepend-cls): inputs of later uses (blank filling,
    # finetuning) follow it too.
    prepend_cls: Optional[bool] = None


@dataclass(frozen=True)
class ScheduleRecord:
    """The learning-rate schedule as the user gave it (None: not recorded)."""
    train_iters: Optional[int] = None
    lr: Optional[float] = None
    min_lr: Optional[float] = None
    lr_decay_style: Optional[str] = None
    lr_decay_iters: Optional[int] = None
    lr_warmup_iters: Optional[int] = None
    lr_wsd_decay_iters: Optional[int] = None
    lr_wsd_decay_style: Optional[str] = None
    weight_decay: Optional[float] = None


@dataclass(frozen=True)
class CheckpointMetadata:
    iteration: int
    consumed_samples: int
    config: dict  # GLMConfig.to_dict()
    layout: Layout = Layout()
    contents: Contents = Contents()
    tokenizer: Optional[TokenizerRecord] = None
    data: Optional[DataRecord] = None
    schedule: Optional[ScheduleRecord] = None
    precision: Optional[str] = None  # fp32 | bf16 | fp16
    converted_from: Optional[str] = None  # an imported checkpoint: the source directory
    hf_layout: Optional[str] = None  # ... and its Hugging Face layout
    # A finetuning run's task, head, label set and best result (finetune/settings.py's
    # FinetuneSettings as a dict); None for pretraining.
    finetune: Optional[dict] = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @property
    def world_size(self) -> int:
        return self.layout.world_size


def recorded_tokenizer(metadata: CheckpointMetadata) -> Optional[str]:
    """Where the checkpoint's tokenizer is: the path its run recorded, else, for an import,
    tokenizer.model in the folder it was imported from; None when neither exists here."""
    recorded = metadata.tokenizer.path if metadata.tokenizer else None
    imported = (os.path.join(metadata.converted_from, "tokenizer.model")
                if metadata.converted_from else None)
    return next((p for p in (recorded, imported) if p and os.path.isfile(p)), None)


def records_of(metadata: CheckpointMetadata) -> dict:
    """The fields that describe the run rather than the files (a reshard keeps them)."""
    return {name: getattr(metadata, name) for name in
            ("tokenizer", "data", "schedule", "precision", "converted_from", "hf_layout",
             "finetune")}


_RECORDS = {"layout": Layout, "contents": Contents, "tokenizer": TokenizerRecord,
            "data": DataRecord, "schedule": ScheduleRecord}


def _record(kind, values, where: str):
    if values is None:
        return None
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: '{kind.__name__}' is not an object; the file is damaged")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(f"{where}: unknown fields {unknown} in '{kind.__name__}'; it was "
                              "written by another version of glm_megatron")
    if kind is DataRecord and values.get("sources") is not None:
        values = dict(values, sources=tuple(_record(DataSource, s, where)
                                            for s in values["sources"]))
    return kind(**values)


def metadata_from_dict(values: dict, where: str, iter_dir: Optional[str] = None
                       ) -> CheckpointMetadata:
    """Parse (and migrate) metadata; `where` names the file in errors. Format 1 needs the
    iteration directory: what it saved is read off the files present."""
    version = values.get("format_version", 1)
    if version == 1:
        values = _migrate_version_1(values, iter_dir)
    elif version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {version} is newer than this "
                              f"glm_megatron reads ({FORMAT_VERSION}); upgrade glm_megatron")
    missing = [k for k in ("iteration", "consumed_samples", "config") if k not in values]
    if missing:
        raise CheckpointError(f"{where}: no {', '.join(missing)}; it was not written by "
                              "glm_megatron or is damaged")
    known = {f.name for f in dataclasses.fields(CheckpointMetadata)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown fields {unknown}; it was written by another "
                              "version of glm_megatron")
    fields_ = {k: _record(_RECORDS[k], v, where) if k in _RECORDS else v
               for k, v in values.items()}
    try:
        return CheckpointMetadata(**fields_)
    except TypeError as error:
        raise CheckpointError(f"{where}: {error}; the file is damaged") from None


def _migrate_version_1(values: dict, iter_dir: Optional[str]) -> dict:
    """Format 1 -> 2: records from the argparse namespace (flag names as of format 1, fixed
    forever), contents from the files present."""
    args = values.get("args") or {}
    layout = values.get("layout") or {}
    tp, pp = int(layout.get("tensor", 1)), int(layout.get("pipeline", 1))
    rank0 = os.path.join(iter_dir, rank_dir_name(0, 0, pp)) if iter_dir else None
    optimizer_files = (sorted(f for f in os.listdir(rank0) if f.startswith(OPTIMIZER_PREFIX))
                       if rank0 and os.path.isdir(rank0) else [])
    per_chunk = args.get("num_layers_per_virtual_pipeline_stage")
    num_layers = (values.get("config") or {}).get("num_layers")
    out = {
        "format_version": FORMAT_VERSION,
        "iteration": values.get("iteration"),
        "consumed_samples": values.get("consumed_samples", 0),
        "config": values.get("config"),
        "layout": {"tensor": tp, "pipeline": pp, "data": int(layout.get("data", 1)),
                   "virtual_stages": (num_layers // (pp * per_chunk)
                                      if per_chunk and num_layers else 1),
                   "first_stage_layers": args.get("decoder_first_pipeline_num_layers"),
                   "last_stage_layers": args.get("decoder_last_pipeline_num_layers"),
                   "distributed_optimizer": len(optimizer_files) > 1},
        "contents": {"optimizer": bool(optimizer_files),
                     "rng": bool(iter_dir) and os.path.isdir(os.path.join(iter_dir, RNG_DIR))},
        "converted_from": args.get("converted_from"),
        "hf_layout": args.get("hf_layout"),
    }
    if args.get("tokenizer_model") or args.get("hf_token_ids"):
        out["tokenizer"] = {"path": args.get("tokenizer_model"), "special_tokens": {
            k: v for k, v in (args.get("hf_token_ids") or {}).items() if v is not None}}
    if "seq_length" in args:
        data_path = args.get("data_path")
        sources = None
        if data_path and len(data_path) == 1:
            sources = [{"prefix": data_path[0]}]
        elif data_path:
            sources = [{"prefix": p, "weight": float(w)}
                       for w, p in zip(data_path[0::2], data_path[1::2])]
        out["data"] = {"sources": sources, "split": args.get("split"),
                       "seq_length": args.get("seq_length"), "seed": args.get("seed"),
                       "objective": args.get("objective", "causal"),
                       "prepend_cls": args.get("prepend_cls"),
                       "global_batch_size": args.get("global_batch_size"),
                       "micro_batch_size": args.get("micro_batch_size")}
    if "train_iters" in args:
        out["schedule"] = {f.name: args.get(f.name) for f in dataclasses.fields(ScheduleRecord)}
        out["precision"] = "bf16" if args.get("bf16") else "fp16" if args.get("fp16") else "fp32"
    return out


def read_metadata(iter_dir: str) -> CheckpointMetadata:
    path = os.path.join(iter_dir, METADATA)
    try:
        with open(path) as f:
            values = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__}: {error})") \
            from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} is not a JSON object; the file is damaged")
    return metadata_from_dict(values, path, iter_dir)


# Finding iterations -----------------------------------------------------------------------
def latest_iteration(root: str) -> Optional[int]:
    """The tracker's iteration, or None when `root` has no tracker."""
    tracker = os.path.join(root, TRACKER)
    if not os.path.isfile(tracker):
        return None
    with open(tracker) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker} holds {text[:40]!r}, not an iteration number; fix or "
                              "delete it")
    return int(text)


def saved_iterations(root: str) -> list[int]:
    """Iterations with an iter_XXXXXXX directory, in increasing order (complete or not)."""
    if not os.path.isdir(root):
        return []
    return sorted(int(m.group(1)) for m in map(_ITERATION_DIR.fullmatch, os.listdir(root)) if m)


def resolve_iteration_dir(root: str, iteration: int) -> str:
    """iter_XXXXXXX, or the copy a crash left while that iteration was being saved again."""
    path = iteration_dir(root, iteration)
    if not os.path.isdir(path) and os.path.isdir(path + REPLACED_SUFFIX):
        return path + REPLACED_SUFFIX
    return path


def expected_files(metadata: CheckpointMetadata) -> list[str]:
    """Every file the metadata says the iteration holds, relative to its directory."""
    layout = metadata.layout
    files = []
    for pp_rank in range(layout.pipeline):
        for tp_rank in range(layout.tensor):
            rank_dir = rank_dir_name(tp_rank, pp_rank, layout.pipeline)
            files.append(os.path.join(rank_dir, MODEL_FILE))
            if metadata.contents.optimizer:
                files += [os.path.join(rank_dir, optimizer_file_name(d))
                          for d in range(layout.optimizer_files)]
    if metadata.contents.rng:
        files += [rng_file_name(r) for r in range(layout.world_size)]
    return files


def file_damage(path: str, deep: bool = False) -> Optional[str]:
    """Why a saved .pt file is unusable (missing, truncated, corrupt), or None. `deep` also
    checks every member's CRC, which reads the whole file."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if deep else None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"truncated or corrupt: {error}"
    return f"corrupt: {bad} fails its checksum" if bad else None


def damage(iter_dir: str) -> Optional[str]:
    """The first problem of a saved iteration ('<file> is missing', ...), None when it is
    complete: readable metadata and every file it lists present and whole (zip directories;
    checksums are verified when the files are loaded)."""
    try:
        metadata = read_metadata(iter_dir)
    except CheckpointError as error:
        return str(error)
    for name in expected_files(metadata):
        problem = file_damage(os.path.join(iter_dir, name))
        if problem:
            return f"{os.path.join(iter_dir, name)} is {problem}"
    return None


def newest_complete_before(root: str, iteration: int) -> Optional[int]:
    for earlier in reversed(saved_iterations(root)):
        if earlier < iteration and damage(iteration_dir(root, earlier)) is None:
            return earlier
    return None


def fallback_hint(root: str, iteration: int, flag: str = "--ckpt-step") -> str:
    """What to do about a damaged iteration: the newest complete earlier one, if any."""
    earlier = newest_complete_before(root, iteration)
    if earlier is None:
        return f"{root} holds no complete earlier iteration"
    return f"the newest complete earlier iteration is {earlier}: load it with {flag} {earlier}"


def find_checkpoint(root: str, iteration: Optional[int] = None, flag: str = "--load",
                    step_flag: str = "--ckpt-step") -> tuple[str, CheckpointMetadata]:
    """(iteration directory, metadata) of `iteration`, or of the tracker's. `root` may also be
    an iteration directory itself. CheckpointError when there is none or it is damaged."""
    if not os.path.isdir(root):
        raise CheckpointError(f"{flag} {root} does not exist; give the --save directory of a "
                              "training run")
    if iteration is None and os.path.isfile(os.path.join(root, METADATA)):
        return root, read_metadata(root)
    chosen = iteration if iteration is not None else latest_iteration(root)
    if chosen is None:
        raise CheckpointError(f"{flag} {root} is not a glm_megatron checkpoint (no {TRACKER}); "
                              "give the --save directory of a training run, or an "
                              "iter_XXXXXXX directory in it")
    path = resolve_iteration_dir(root, chosen)
    if not os.path.isdir(path):
        source = f"{step_flag} {chosen}" if iteration is not None else f"its {TRACKER}"
        raise CheckpointError(f"{flag} {root}: {path}, named by {source}, does not exist; "
                              f"{fallback_hint(root, chosen + 1, step_flag)}")
    try:
        metadata = read_metadata(path)
    except CheckpointError as error:
        raise CheckpointError(f"{flag} {root}: {error}; "
                              f"{fallback_hint(root, chosen, step_flag)}") from None
    return path, metadata
