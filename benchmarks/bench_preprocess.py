"""Preprocessing throughput: tools/preprocess_data.py's library side with 1 and 2 workers.

The built-in corpus (Python's documentation, glm_megatron.data.builtin_corpus) is written to a
temporary .jsonl, repeated --repeat times so that a run lasts long enough to time, and
tokenized with the built-in tokenizer (glm_megatron.data.builtin.ensure_builtin_data) into an
indexed dataset, as

    python tools/preprocess_data.py --input corpus.jsonl --json-keys text \\
        --tokenizer-model tokenizer.model --output-prefix out --workers N

does, minus the interpreter start and megatron-core import (~4 s, paid once per command).
Trials alternate between the worker counts; the table shows the median run of each, wall time
from the first byte read to the renamed files (worker start-up included). The outputs of all
worker counts are checked to be identical byte for byte.

    python benchmarks/bench_preprocess.py                      # ~20 MB of JSON lines
    python benchmarks/bench_preprocess.py --repeat 2 --trials 1   # quick
    python benchmarks/bench_preprocess.py --append-results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import json
import os
import platform
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.data.builtin_corpus import iter_builtin_documents  # noqa: E402
from glm_megatron.data.preprocess import preprocess  # noqa: E402


def write_corpus(path: str, repeat: int) -> int:
    documents = list(iter_builtin_documents())
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeat):
            for text in documents:
                f.write(json.dumps({"text": text}) + "\n")
    return os.path.getsize(path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=12,
                        help="copies of the built-in corpus (~1.7 MB of text each)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--append-results", metavar="MD",
                        help="append a 'Preprocessing' section with the table to this file")
    args = parser.parse_args(argv)

    # Imported here, not at the top: the spawned workers re-import this module, and the built-in
    # data module brings torch and megatron-core (seconds of start-up that the tool never pays).
    from glm_megatron.data.builtin import ensure_builtin_data

    _, model = ensure_builtin_data()
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        corpus = os.path.join(tmp, "corpus.jsonl")
        size = write_corpus(corpus, args.repeat)
        preprocess([corpus], os.path.join(tmp, "warmup"), model)  # imports, page cache
        runs = {w: [] for w in args.workers}
        for trial in range(args.trials):
            for workers in args.workers:
                prefix = os.path.join(tmp, f"w{workers}")
                result = preprocess([corpus], prefix, model, workers=workers,
                                    chunk_size=args.chunk_size)
                runs[workers].append(result)
        outputs = [os.path.join(tmp, f"w{w}_text_document") for w in args.workers]
        identical = all(filecmp.cmp(outputs[0] + ext, other + ext, shallow=False)
                        for other in outputs[1:] for ext in (".bin", ".idx"))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = runs[args.workers[0]][0]
    header = (f"{first.records:,} documents, {first.tokens:,} tokens, {size / 2**20:.1f} MiB "
              f"of JSON lines (built-in corpus x {args.repeat}); median of {args.trials} "
              f"trials; outputs identical across worker counts: {identical}; "
              f"load average at the end: {load:.1f}")
    rows = ["| workers | seconds | documents/s | tokens/s | MiB/s | vs 1 worker |",
            "|---|---|---|---|---|---|"]
    base = None
    for workers, results in runs.items():
        seconds = statistics.median(r.seconds for r in results)
        rate = first.tokens / seconds
        base = base or rate
        rows.append(f"| {workers} | {seconds:.2f} | {first.records / seconds:,.0f} | "
                    f"{rate:,.0f} | {size / 2**20 / seconds:.1f} | {rate / base:.2f}x |")
    table = "\n".join(rows)
    print(header)
    print(table)
    if not identical:
        raise SystemExit("outputs differ between worker counts")
    if args.append_results:
        command = "python benchmarks/bench_preprocess.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:])
            if a != args.append_results and a != "--append-results")
        with open(args.append_results, "a", encoding="utf-8") as f:
            f.write(f"\n## Preprocessing\n\n"
                    f"{datetime.date.today().isoformat()}, {machine()}.\n\n"
                    f"```\n{command.strip()}\n```\n\n{header}.\n\n{table}\n")
        print(f"appended to {args.append_results}")


if __name__ == "__main__":
    main()
