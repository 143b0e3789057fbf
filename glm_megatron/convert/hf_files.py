"""Hugging Face weight files: a streaming sharded safetensors writer and a lazy reader for
safetensors and PyTorch .bin checkpoints (sharded or not).

safetensors is 8 bytes of header length (little endian), a JSON header mapping each name to
dtype, shape and [begin, end) byte offsets in the data section, then the data. Since the
converters know every output name and shape before reading a weight (mapping.hf_plan), each
shard's header is written first and tensors are streamed after it as they are produced: nothing
but the tensors being converted is ever held in memory.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Optional

import torch

from .errors import ConversionError

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"

_DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB', '1000' -> bytes (transformers' max_shard_size notation)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", str(text), re.IGNORECASE)
    if not match:
        raise ConversionError(f"--max-shard-size {text!r} is not a size; write e.g. 5GB or 500MB")
    value, unit = float(match.group(1)), match.group(2).upper()
    scale = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(unit)
    if scale is None:
        raise ConversionError(f"--max-shard-size {text!r}: unknown unit {unit}; use KB, MB or GB")
    return int(value * scale)


def _nbytes(shape, dtype: torch.dtype) -> int:
    return int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()


class ShardedSafetensorsWriter:
    """Writes `plan` [(name, shape, dtype), ...] as model-0000K-of-0000N.safetensors files plus
    model.safetensors.index.json; tensors must arrive in plan order."""

    def __init__(self, directory: str, plan: list[tuple[str, tuple, torch.dtype]],
                 max_shard_bytes: int):
        self.directory = directory
        shards, current, size = [], [], 0
        for name, shape, dtype in plan:
            nbytes = _nbytes(shape, dtype)
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = [], 0
            current.append((name, tuple(shape), dtype, nbytes))
            size += nbytes
        if current:
            shards.append(current)
        self.shards = shards
        self.total_size = sum(e[3] for s in shards for e in s)
        self.files = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
                      for k in range(len(shards))]
        self._shard, self._position, self._handle = 0, 0, None

    def _open_next(self):
        entries = self.shards[self._shard]
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, dtype, nbytes in entries:
            header[name] = {"dtype": _DTYPE_CODES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
        self._handle = open(os.path.join(self.directory, self.files[self._shard]), "wb")
        self._handle.write(struct.pack("<Q", len(text)) + text)
        self._position = 0

    def write(self, tensors: dict[str, torch.Tensor]):
        for name, tensor in tensors.items():
            if self._shard >= len(self.shards):
                raise ConversionError(f"internal: {name} is not in the export plan")
            if self._handle is None:
                self._open_next()
            expected = self.shards[self._shard][self._position]
            if (name, tuple(tensor.shape), tensor.dtype) != expected[:3]:
                raise ConversionError(f"internal: export produced {name} {list(tensor.shape)} "
                                      f"{tensor.dtype} where the plan has {expected[:3]}")
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            self._handle.write(memoryview(data))
            self._position += 1
            if self._position == len(self.shards[self._shard]):
                self._handle.close()
                self._handle, self._shard = None, self._shard + 1

    def close(self):
        if self._shard != len(self.shards):
            raise ConversionError("internal: the export stopped before writing every tensor")
        weight_map = {e[0]: self.files[k] for k, s in enumerate(self.shards) for e in s}
        with open(os.path.join(self.directory, SAFETENSORS_INDEX), "w") as f:
            json.dump({"metadata": {"total_size": self.total_size}, "weight_map": weight_map},
                      f, indent=2)


def read_safetensors_header(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConversionError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ConversionError(f"{path} is not a safetensors file (bad header length)")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    for name, info in header.items():
        info["data_start"] = 8 + length + info["data_offsets"][0]
    return header


class HFWeights:
    """Lazy access to the tensors of a Hugging Face model directory."""

    def __init__(self, directory: str):
        self.directory = directory
        self.files: dict[str, str] = {}  # tensor name -> file
        self.shapes: dict[str, tuple] = {}
        self._headers: dict[str, dict] = {}
        self._bin: dict[str, dict] = {}
        for path in self._weight_files():
            if path.endswith(".safetensors"):
                header = read_safetensors_header(path)
                self._headers[path] = header
                for name, info in header.items():
                    self._add(name, path, tuple(info["shape"]))
            else:
                state = self._bin_state(path)
                for name, tensor in state.items():
                    self._add(name, path, tuple(tensor.shape))

    def _add(self, name: str, path: str, shape: tuple):
        if name in self.files:
            raise ConversionError(f"{path}: {name} also appears in {self.files[name]}; the "
                                  "directory mixes two checkpoints")
        self.files[name], self.shapes[name] = path, shape

    def _weight_files(self) -> list[str]:
        d = self.directory
        for index in (SAFETENSORS_INDEX, BIN_INDEX):
            path = os.path.join(d, index)
            if os.path.isfile(path):
                with open(path) as f:
                    weight_map = json.load(f).get("weight_map") or {}
                files = sorted({os.path.join(d, v) for v in weight_map.values()})
                missing = [f for f in files if not os.path.isfile(f)]
                if missing:
                    raise ConversionError(f"{path} lists {missing[0]}, which is missing; "
                                          "download every shard")
                return files
        for single in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(d, single)):
                return [os.path.join(d, single)]
        raise ConversionError(f"--load-dir {d} holds no weights (no {SAFETENSORS_INDEX}, "
                              "model.safetensors, pytorch_model.bin or its index); give a "
                              "Hugging Face model directory")

    def _bin_state(self, path: str) -> dict:
        if path not in self._bin:
            try:
                self._bin[path] = torch.load(path, map_location="cpu", mmap=True,
                                             weights_only=True)
            except Exception as e:
                raise ConversionError(f"{path} cannot be read as PyTorch weights "
                                      f"({type(e).__name__}: {e})") from None
        return self._bin[path]

    def read(self, name: str) -> torch.Tensor:
        path = self.files[name]
        if path.endswith(".bin"):
            return self._bin_state(path)[name].clone()
        info = self._headers[path][name]
        dtype = _CODE_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConversionError(f"{path}: {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        buffer = bytearray(end - begin)
        with open(path, "rb") as f:
            f.seek(info["data_start"])
            if f.readinto(buffer) != len(buffer):
                raise ConversionError(f"{path} is truncated (reading {name}); download it again")
        if not buffer:
            return torch.empty(info["shape"], dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(info["shape"])

    def dtype(self, name: str) -> Optional[torch.dtype]:
        path = self.files[name]
        if path.endswith(".bin"):
            return self._bin_state(path)[name].dtype
        return _CODE_DTYPES.get(self._headers[path][name]["dtype"])
