"""Where logged values go beside stdout: TensorBoard (--tensorboard-dir) and Weights & Biases
(--wandb-project, Megatron-LM's flags), behind TensorBoard's writer interface (add_scalar,
add_text, flush, close), so the loggers write once whatever is on. W&B is used only when its
flag is given; a flag without the package is a one-line error before the run starts. The flag
checks import no torch (pretrain_glm.py --help runs them)."""

from __future__ import annotations

import importlib.util
from typing import Optional

from ..config import ConfigError


def check_wandb_flags(args):
    """Before anything runs: W&B's flags need --wandb-project and the wandb package."""
    if args.wandb_project is None:
        for flag in ("wandb_exp_name", "wandb_save_dir"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --wandb-project")
        return
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"--wandb-project {args.wandb_project}: the wandb package is not "
                          "installed; pip install wandb, or leave the W&B flags out")


class WandbWriter:
    """One W&B run. Values logged against consumed samples (`... vs samples`) stay in
    TensorBoard: W&B's step is the iteration and must not go back."""

    def __init__(self, project: str, name: Optional[str], save_dir: Optional[str],
                 config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=project, name=name, dir=save_dir, config=config)

    def add_scalar(self, tag: str, value: float, step: int):
        if not tag.endswith(" vs samples"):
            self.wandb.log({tag: value}, step=step)

    def add_text(self, tag: str, text: str, step: int):
        pass  # the run's config holds the arguments

    def flush(self):
        pass

    def close(self):
        self.wandb.finish()


class _Writers:
    def __init__(self, writers: list):
        self.writers = writers

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            for writer in self.writers:
                getattr(writer, method)(*args, **kwargs)
        return call


def open_writers(args, config: Optional[dict] = None):
    """TensorBoard and/or W&B as the flags ask (call on the rank that logs); None for
    neither. `config`: the settings W&B records with the run."""
    from .metrics import open_tensorboard  # torch: not for the flag checks above

    writers = [w for w in (open_tensorboard(args.tensorboard_dir),) if w is not None]
    if args.wandb_project is not None:
        writers.append(WandbWriter(args.wandb_project, args.wandb_exp_name,
                                   args.wandb_save_dir, config or {}))
    return None if not writers else writers[0] if len(writers) == 1 else _Writers(writers)
