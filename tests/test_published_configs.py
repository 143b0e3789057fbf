"""Directories with the published config.json of every GLM generation (tiny dimensions, every
published key, name and flag kept) import with tools/checkpoint/convert.py, and exporting the
import writes a config that the published loaders read as the published one."""

from __future__ import annotations

import json
import os

import pytest
import torch

from published_configs import (PUBLISHED, family, published_tensors, read_values,
                               tiny_published)
from test_convert_hf import convert

# The ChatGLM2/3 / GLM-4 generation exports to transformers' glm by default; its remote-code
# layout on request.
EXPORT_LAYOUT = {"chatglm2": "chatglm"}


def write_published_dir(name: str, directory: str) -> dict:
    """config.json and random weights under the published names, as the model card has them."""
    from safetensors.torch import save_file
    config = tiny_published(name)
    g = torch.Generator().manual_seed(len(name))
    tensors = {k: 0.05 * torch.randn(shape, generator=g)
               for k, shape in published_tensors(name, config).items()}
    if family(name) == "chatglm-6b":
        # ChatGLM-6B saves its head as the word embeddings themselves (tied).
        tensors["lm_head.weight"] = tensors["transformer.word_embeddings.weight"]
    os.makedirs(directory)
    save_file({k: v.clone() for k, v in tensors.items()},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return config


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_imports_and_exports_for_its_loader(tmp_path, name):
    from glm_megatron.convert.export import export_checkpoint
    published = write_published_dir(name, str(tmp_path / "published"))
    convert("--direction", "hf-to-megatron", "--load-dir", str(tmp_path / "published"),
            "--save-dir", str(tmp_path / "ours"))
    export_checkpoint(str(tmp_path / "ours"), str(tmp_path / "export"), progress=False,
                      hf_layout=EXPORT_LAYOUT.get(family(name)), log=lambda _line: None)
    with open(tmp_path / "export" / "config.json") as f:
        exported = json.load(f)
    assert read_values(name, exported) == read_values(name, published)


@pytest.mark.parametrize("name", ["GLM-4-9B-0414"])
def test_native_export_loads_as_the_published_config(tmp_path, name):
    """For transformers' own classes the loader is at hand: both configs load the same."""
    from transformers import AutoConfig
    from glm_megatron.convert.export import export_checkpoint
    write_published_dir(name, str(tmp_path / "published"))
    convert("--direction", "hf-to-megatron", "--load-dir", str(tmp_path / "published"),
            "--save-dir", str(tmp_path / "ours"))
    export_checkpoint(str(tmp_path / "ours"), str(tmp_path / "export"), progress=False,
                      log=lambda _line: None)
    ignored = {"architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
               "bos_token_id"}
    published, exported = (
        {k: v for k, v in AutoConfig.from_pretrained(str(tmp_path / d)).to_dict().items()
         if k not in ignored} for d in ("published", "export"))
    assert exported == published
