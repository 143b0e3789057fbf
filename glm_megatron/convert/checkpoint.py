"""Streaming access to our checkpoints (the format of glm_megatron/checkpoint_format.py) from a
single process, at any TP x PP x DP layout, with or without the distributed optimizer.

The reader indexes every rank file once (memory-mapped, no weights read), then hands out full
tensors group by group: each read maps the rank files of one pipeline stage, copies out the
requested shards, joins them over TP and unmaps again, so a conversion holds one layer's tensors
at a time. Only model weights are needed for export; optimizer state is read for resharding.

The writer lays out the files `load_checkpoint` reads: per (TP, PP) rank the model shards with
their partition specs and `_extra_state` entries, optionally the optimizer state as one
`optimizer_dp000.pt` (per-parameter element ranges, which load at any DP size), metadata and the
tracker. Its checkpoints hold no random states (they belong to the ranks of a run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from ..checkpoint_format import (METADATA, MODEL_FILE, TRACKER, CheckpointError,
                                 CheckpointMetadata, Contents, Layout, file_damage,
                                 find_checkpoint, iteration_dir, optimizer_file_name,
                                 rank_dir_name)
from ..config import ConfigError, GLMConfig
from ..parallel.layer_split import PlacementFlags, stage_layer_ranges, virtual_stage_count
from ..param_names import OUTPUT_LAYER
from ..parallel.sharding import shard, unshard
from .errors import ConversionError
from .schema import (EXTRA_STATE, Head, Param, layer_extra_state, layer_params, post_extra_state,
                     post_params, pre_params)

OPTIMIZER_KEYS = ("master", "exp_avg", "exp_avg_sq")


def _load(path: str) -> dict:
    # mmap: nothing is read until a tensor is touched, and dropping the dict unmaps it again.
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ConversionError(f"{path} cannot be read ({type(e).__name__}: {e}); the checkpoint "
                              "is damaged or not one of ours") from None


@dataclass
class _Entry:
    stage: int  # pipeline rank whose files hold it
    local_shape: tuple[int, ...]
    dtype: torch.dtype
    partition: Optional[tuple[int, int]]

    def full_shape(self, tp: int) -> tuple[int, ...]:
        shape = list(self.local_shape)
        if self.partition is not None:
            shape[self.partition[0]] *= tp
        return tuple(shape)


class CheckpointReader:
    """One iteration of a checkpoint directory (`--save` of a training run)."""

    def __init__(self, root: str, iteration: Optional[int] = None, flag: str = "--load-dir"):
        self.root = root
        try:
            self.iter_dir, self.metadata = find_checkpoint(root, iteration, flag, "--iteration")
        except CheckpointError as error:
            raise ConversionError(str(error)) from None
        layout = self.metadata.layout
        self.tp, self.pp, self.dp = layout.tensor, layout.pipeline, layout.data
        try:
            self.config = GLMConfig.from_dict(self.metadata.config)
        except (ConfigError, TypeError, KeyError) as e:
            raise ConversionError(f"{self.iter_dir}/{METADATA}: its config is not a valid "
                                  f"GLMConfig ({e}); the checkpoint was not written by "
                                  "glm_megatron") from None
        self.entries: dict[str, _Entry] = {}
        self._index()
        self.head = (Head(self.entries["score.weight"].full_shape(self.tp)[0])
                     if "score.weight" in self.entries else Head())
        self._validate()

    # Indexing -------------------------------------------------------------------------------
    def rank_file(self, tp_rank: int, pp_rank: int, name: str = MODEL_FILE) -> str:
        return os.path.join(self.iter_dir, rank_dir_name(tp_rank, pp_rank, self.pp), name)

    def _index(self):
        for stage in range(self.pp):
            for t in range(self.tp):
                path = self.rank_file(t, stage)
                if not os.path.isfile(path):
                    raise ConversionError(
                        f"{path} is missing: {self.iter_dir} was saved at TP={self.tp} x "
                        f"PP={self.pp} and needs every rank's file; copy the whole iteration")
                state = _load(path)
                if not isinstance(state, dict) or "model" not in state:
                    raise ConversionError(f"{path} has no 'model' entry; it is not a "
                                          "glm_megatron checkpoint file")
                partition = state.get("partition") or {}
                for name, tensor in state["model"].items():
                    if name.endswith(EXTRA_STATE) or not isinstance(tensor, torch.Tensor):
                        continue
                    spec = partition.get(name)
                    spec = tuple(spec) if spec is not None else None
                    entry = _Entry(stage, tuple(tensor.shape), tensor.dtype, spec)
                    if t == 0:
                        if name in self.entries:
                            raise ConversionError(f"{path}: {name} appears on two pipeline "
                                                  "stages; the checkpoint is inconsistent")
                        self.entries[name] = entry
                    elif name not in self.entries or \
                            self.entries[name].local_shape != entry.local_shape:
                        raise ConversionError(f"{path}: {name} disagrees with TP rank 0's "
                                              "shard; the checkpoint is inconsistent")
                del state

    def _validate(self):
        """Every tensor is one our config defines, with the shape it defines."""
        cfg, expected = self.config, {}
        expected.update(pre_params(cfg))
        for i in range(cfg.num_layers):
            expected.update(layer_params(cfg, i))
        expected.update(post_params(cfg, self.head))
        names = set(self.entries)
        if self.pp > 1 and not cfg.untie_embeddings_and_output_weights:
            names.discard(OUTPUT_LAYER)  # the last stage's copy of the tied word embeddings
        unknown = sorted(names - set(expected))
        if unknown:
            raise ConversionError(f"{self.iter_dir}: parameters its config does not define: "
                                  f"{', '.join(unknown[:8])}; the checkpoint and its "
                                  "metadata.json disagree")
        missing = sorted(set(expected) - names)
        if missing:
            raise ConversionError(f"{self.iter_dir}: parameters missing from the rank files: "
                                  f"{', '.join(missing[:8])}; the checkpoint is incomplete")
        for name, param in expected.items():
            shape = self.entries[name].full_shape(self.tp)
            if shape != param.shape:
                raise ConversionError(
                    f"{self.iter_dir}: {name} has shape {list(shape)} but its config implies "
                    f"{list(param.shape)}; the checkpoint and its metadata.json disagree")

    # Reading ---------------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        return self.metadata.iteration

    @property
    def prepends_cls(self) -> bool:
        """Whether the model's inputs begin with [CLS]: as its run recorded (GLM's
        --prepend-cls), else only for GLM's published models (imported in the glm-10b layout),
        which start every pretraining sample and finetuning input with it."""
        data = self.metadata.data
        if data is not None and data.prepend_cls is not None:
            return data.prepend_cls
        return self.metadata.hf_layout == "glm-10b"

    @property
    def tokenizer_path(self) -> Optional[str]:
        """The SentencePiece model the run trained with, as recorded (None: not recorded)."""
        return self.metadata.tokenizer.path if self.metadata.tokenizer else None

    def dtype_of(self, name: str) -> torch.dtype:
        return self.entries[name].dtype

    def group_names(self, group) -> list[str]:
        """Our full-model names of a group ("pre", a layer number, "post"), tied copy excluded."""
        if group == "pre":
            params = pre_params(self.config)
        elif group == "post":
            params = post_params(self.config, self.head)
        else:
            params = layer_params(self.config, group)
        return list(params)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Full tensors, joined over TP; one pipeline stage's files are mapped at a time."""
        by_stage: dict[int, list[str]] = {}
        for name in names:
            by_stage.setdefault(self.entries[name].stage, []).append(name)
        out = {}
        for stage, stage_names in by_stage.items():
            states = [_load(self.rank_file(t, stage))["model"] for t in range(self.tp)]
            for name in stage_names:
                out[name] = self._join(name, [s[name] for s in states])
            del states
        return out

    def read_group(self, group) -> dict[str, torch.Tensor]:
        return self.read(self.group_names(group))

    def _join(self, name: str, shards: list[torch.Tensor]) -> torch.Tensor:
        spec = self.entries[name].partition
        if spec is None:
            return shards[0].clone()  # a private copy: the mapped file can be released
        return unshard(shards, spec[0], spec[1])

    # Optimizer state (resharding) -------------------------------------------------------------
    def has_optimizer_state(self) -> bool:
        """Whether the checkpoint was saved with its optimizer; ConversionError when it was
        but an optimizer file is missing or truncated (never read as a weights-only one)."""
        if not self.metadata.contents.optimizer:
            return False
        for stage in range(self.pp):
            for t in range(self.tp):
                for path in self._optimizer_files(t, stage):
                    problem = file_damage(path)
                    if problem:
                        raise ConversionError(
                            f"{path} is {problem}: the checkpoint's optimizer state is "
                            "incomplete; pass --no-optimizer to reshard the weights only")
        return True

    def _optimizer_files(self, tp_rank: int, stage: int) -> list[str]:
        return [self.rank_file(tp_rank, stage, optimizer_file_name(d))
                for d in range(self.metadata.layout.optimizer_files)]

    def optimizer_common(self) -> dict:
        """Step count and loss-scaler state (the same on every rank)."""
        state = _load(self._optimizer_files(0, 0)[0])
        return {"step": state.get("step", 0.0), "loss_scaler": state.get("loss_scaler")}

    def read_optimizer(self, names: Iterable[str]) -> dict[str, dict[str, torch.Tensor]]:
        """Per name, the full fp32 master weight and Adam moments (those that exist), gathered
        from every DP rank's element ranges and joined over TP like the weight."""
        by_stage: dict[int, list[str]] = {}
        for name in names:
            by_stage.setdefault(self.entries[name].stage, []).append(name)
        out = {}
        for stage, stage_names in by_stage.items():
            pieces = []  # per TP rank: {name: [entries from every DP file]}
            for t in range(self.tp):
                merged: dict[str, list] = {}
                for path in self._optimizer_files(t, stage):
                    for name, entries in _load(path)["params"].items():
                        merged.setdefault(name, []).extend(entries)
                pieces.append(merged)
            for name in stage_names:
                entry = self.entries[name]
                local = [_assemble(p.get(name), entry.local_shape, name) for p in pieces]
                keys = [k for k in OPTIMIZER_KEYS if all(k in loc for loc in local)]
                out[name] = {k: self._join(name, [loc[k] for loc in local]) for k in keys}
            del pieces
        return out

    def scheduler_state(self):
        return _load(self.rank_file(0, 0)).get("opt_param_scheduler")


def _assemble(entries: Optional[list], shape: tuple, name: str) -> dict[str, torch.Tensor]:
    """One rank's flattened (start, end) pieces of a parameter's state -> tensors of `shape`."""
    if not entries:
        raise ConversionError(f"the optimizer state has no entry for {name}; reshard with "
                              "--no-optimizer to drop the optimizer state")
    numel = int(torch.Size(shape).numel())
    out = {}
    for key in OPTIMIZER_KEYS:
        if not all(key in e for e in entries):
            continue
        flat = torch.empty(numel, dtype=torch.float32)
        covered = 0
        for e in entries:
            flat[e["start"]:e["end"]] = e[key].reshape(-1).float()
            covered += e["end"] - e["start"]
        if covered != numel:
            raise ConversionError(f"the optimizer state of {name} covers {covered} of {numel} "
                                  "elements; some optimizer_dp files are missing")
        out[key] = flat.view(shape)
    return out


class CheckpointWriter:
    """Writes one iteration of our checkpoint at TP x PP, one pipeline rank at a time.

    Layers are placed as build_model_chunks places them: `virtual_stages` model chunks per
    pipeline rank (rank r holds model stages r, r + PP, ...), optionally with `first`/`last`
    layer counts on the end stages."""

    def __init__(self, root: str, config: GLMConfig, head: Head, tp: int, pp: int, *,
                 virtual_stages: int = 1, first_stage_layers: Optional[int] = None,
                 last_stage_layers: Optional[int] = None, iteration: int = 0,
                 consumed_samples: int = 0, data_parallel: int = 1, **records):
        """`records`: CheckpointMetadata's other fields (tokenizer, data, schedule, precision,
        converted_from, hf_layout)."""
        self.root, self.config, self.head = root, config, head
        self.tp, self.pp = tp, pp
        self.num_stages = pp * virtual_stages
        self.iteration, self.consumed_samples = iteration, consumed_samples
        self.layout = Layout(tp, pp, data_parallel, virtual_stages, first_stage_layers,
                             last_stage_layers)
        self.records = records
        self.with_optimizer = False
        try:
            config.check_tensor_parallel(tp)
            self.ranges = stage_layer_ranges(config.num_layers, self.num_stages,
                                             first_stage_layers, last_stage_layers)
        except ConfigError as e:
            raise ConversionError(
                str(e).replace("--tensor-model-parallel-size", "--target-tensor-parallel-size")
                .replace("--pipeline-model-parallel-size", "--target-pipeline-parallel-size "
                         "(x virtual stages)")) from None
        if head.is_classifier and self.num_stages > 1:
            raise ConversionError("--target-pipeline-parallel-size must be 1 for a model with a "
                                  "classification head (it trains without pipelining)")
        self.chunks = [[r + v * pp for v in range(virtual_stages)] for r in range(pp)]
        self.iter_dir = iteration_dir(root, iteration)
        self._written: set[int] = set()

    def _last(self, stage: int) -> bool:
        return stage == self.num_stages - 1

    def stage_groups(self, rank: int) -> list:
        """The groups ("pre", layer numbers, "post") pipeline rank `rank` holds, chunk by chunk."""
        groups = []
        for stage in self.chunks[rank]:
            groups += (["pre"] if stage == 0 else []) + list(self.ranges[stage])
            groups += ["post"] if self._last(stage) else []
        return groups

    def needs_tied_copy(self, rank: int) -> bool:
        """Whether `rank` holds a tied LM head away from the embedding (a copy of it)."""
        return (self.chunks[rank][-1] == self.num_stages - 1
                and tied_copy_needed(self.config, self.head, self.num_stages))

    def stage_params(self, rank: int) -> dict[str, Param]:
        """Our names on pipeline rank `rank`, with shapes and TP splits."""
        cfg, out = self.config, {}
        for stage in self.chunks[rank]:
            if stage == 0:
                out.update(pre_params(cfg))
            for i in self.ranges[stage]:
                out.update(layer_params(cfg, i))
            if self._last(stage):
                out.update(post_params(cfg, self.head, holds_embedding=stage == 0))
        return out

    def _extra_state(self, rank: int) -> list[str]:
        names = []
        for stage in self.chunks[rank]:
            names += [n for i in self.ranges[stage] for n in layer_extra_state(self.config, i)]
            names += post_extra_state(self.config, self.head) if self._last(stage) else []
        return names

    def write_stage(self, stage: int, tensors: dict[str, torch.Tensor],
                    optimizer: Optional[dict[str, dict[str, torch.Tensor]]] = None,
                    optimizer_common: Optional[dict] = None, scheduler: Optional[dict] = None):
        """`tensors`: every full tensor of the stage (a tied head's copy included on a last stage
        without the embedding); `optimizer`: per name its full master/exp_avg/exp_avg_sq."""
        params = self.stage_params(stage)
        if set(tensors) != set(params):
            raise ConversionError(
                f"internal: stage {stage} got {sorted(set(tensors) ^ set(params))[:6]} "
                "different from the model's parameters")
        for name, param in params.items():
            if tuple(tensors[name].shape) != param.shape:
                raise ConversionError(f"{name} has shape {list(tensors[name].shape)} but the "
                                      f"config implies {list(param.shape)}")
        for t in range(self.tp):
            rank_dir = os.path.join(self.iter_dir, rank_dir_name(t, stage, self.pp))
            os.makedirs(rank_dir, exist_ok=True)
            model, partition = {}, {}
            for name, param in params.items():
                model[name] = self._shard(tensors[name], param, t)
                partition[name] = param.partition
            for name in self._extra_state(stage):
                model[name] = None
            torch.save({"model": model, "partition": partition,
                        "opt_param_scheduler": scheduler}, os.path.join(rank_dir, MODEL_FILE))
            del model
            if optimizer is not None:
                state = {"params": {}, "step": (optimizer_common or {}).get("step", 0.0),
                         "loss_scaler": (optimizer_common or {}).get("loss_scaler")}
                for name, param in params.items():
                    entry = {k: self._shard(v, param, t).reshape(-1)
                             for k, v in optimizer[name].items()}
                    numel = next(iter(entry.values())).numel()
                    state["params"][name] = [{"start": 0, "end": numel, **entry}]
                torch.save(state, os.path.join(rank_dir, optimizer_file_name(0)))
                self.with_optimizer = True
        self._written.add(stage)

    def _shard(self, full: torch.Tensor, param: Param, rank: int) -> torch.Tensor:
        if param.partition is None:
            return full.contiguous()
        return shard(full, param.partition[0], param.partition[1], rank, self.tp)

    def finish(self):
        missing = sorted(set(range(self.pp)) - self._written)
        if missing:
            raise ConversionError(f"internal: pipeline stages {missing} were not written")
        metadata = CheckpointMetadata(
            self.iteration, self.consumed_samples, self.config.to_dict(), layout=self.layout,
            contents=Contents(optimizer=self.with_optimizer, rng=False), **self.records)
        with open(os.path.join(self.iter_dir, METADATA), "w") as f:
            f.write(metadata.to_json())
        with open(os.path.join(self.root, TRACKER), "w") as f:
            f.write(str(self.iteration))


_TARGET_FLAGS = PlacementFlags("--target-pipeline-parallel-size",
                               "--target-num-layers-per-virtual-pipeline-stage",
                               "--target-decoder-first/last-pipeline-num-layers")


def pipeline_split(config: GLMConfig, pp: int, layers_per_virtual_stage: Optional[int] = None,
                   first_stage_layers: Optional[int] = None,
                   last_stage_layers: Optional[int] = None) -> dict:
    """CheckpointWriter's layer-placement arguments from pretrain_glm.py's flags (named
    --target-...), checked as pretrain_glm.py checks them."""
    try:
        virtual = virtual_stage_count(config.num_layers, pp, layers_per_virtual_stage,
                                      bool(first_stage_layers or last_stage_layers),
                                      _TARGET_FLAGS)
    except ConfigError as error:
        raise ConversionError(str(error)) from None
    if layers_per_virtual_stage is None:
        return {"first_stage_layers": first_stage_layers, "last_stage_layers": last_stage_layers}
    return {"virtual_stages": virtual}


def tied_copy_needed(config: GLMConfig, head: Head, num_stages: int) -> bool:
    """A tied LM head on a last stage without the embedding keeps a copy of the embeddings."""
    return (num_stages > 1 and not head.is_classifier
            and not config.untie_embeddings_and_output_weights)
