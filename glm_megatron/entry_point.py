"""What pretrain_glm.py and finetune_glm.py share with the shell: flags parsed (and --help
answered) before torch is imported, one line per error from rank 0, and exit statuses
0 (done), 2 (bad input), 3 (diverged) and 130 (Ctrl-C, as a shell reports it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from .config import ConfigError

# The job for parsed flags, and the errors beyond the training ones that mean bad input; it
# imports torch, so it is asked for only once the flags are good.
Job = Callable[[argparse.Namespace], object]


def run(script: str, parse_args: Callable[[Optional[Sequence[str]]], argparse.Namespace],
        load_job: Callable[[], tuple[Job, tuple[type, ...]]],
        argv: Optional[Sequence[str]] = None) -> int:
    def say(text: str):
        # Every rank meets the same error; rank 0 speaks for the job.
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{script}: {text}", file=sys.stderr)

    try:
        args = parse_args(argv)  # --help answers here, before torch is imported
    except ConfigError as error:
        say(f"error: {error}")
        return 2
    job, input_errors = load_job()
    from .training.divergence import TrainingDiverged
    from .training.pretrain import RUN_ERRORS, Interrupted
    try:
        job(args)
    except Interrupted as stop:
        say(str(stop))
        return 130
    except (*RUN_ERRORS, *input_errors) as error:
        say(f"error: {error}")
        return 3 if isinstance(error, TrainingDiverged) else 2  # diverged, or bad input
    return 0
