"""Peak memory of an audit, per stage and in bytes per parameter, each model in a fresh process.

Two subjects: the built-in SmolLM2-135M, and a larger random Llama of the same family (SmolLM2's
tokenizer, a wider, shallower stack; random weights know nothing, so it runs with
`known_only=False`). Each runs `audit` for the chosen methods in its own child process, so no
memory the allocator kept from an earlier run is counted.

**Method.** Linux keeps a process's peak resident set size in `/proc/self/status` (`VmHWM`), and
writing `5` to `/proc/self/clear_refs` resets that peak to the current resident size. The child
wraps the audit's stage timer (`unlearn_lens.study.audit._timed`): at each stage's start it reads
`VmHWM` (the peak since the last reset, which covers the gap between stages and goes into the
overall peak) and resets it; at the stage's end `VmHWM` is that stage's exact peak. No sampling
thread, so no short spike is missed. On a GPU the same is done with
`torch.cuda.reset_peak_memory_stats` / `max_memory_allocated`. Bytes per parameter divide the
peak by the subject's parameter count (tied embeddings once); the resident figure includes the
Python interpreter and the torch libraries (the `baseline` line, before the model loads), which
weigh little per parameter beyond a few hundred million parameters.

    python benchmarks/memory.py [--models builtin,random] [--methods ga,npo] [--low-memory]
        [--layers 2] [--width 1536]

Prints one table per model and, with `--json FILE`, writes the numbers there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

GIB = 1 << 30


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMeter:
    """Exact per-stage peaks of resident (and CUDA) memory via VmHWM resets."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.stages: list[dict] = []
        self.overall = 0
        self.overall_cuda = 0

    def _reset(self) -> None:
        import torch

        self.overall = max(self.overall, _status_kib("VmHWM") * 1024)
        Path("/proc/self/clear_refs").write_text("5")
        if self.cuda:
            self.overall_cuda = max(self.overall_cuda, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    @contextmanager
    def stage(self, name: str):
        import torch

        self._reset()
        start = time.perf_counter()
        yield
        peak = _status_kib("VmHWM") * 1024
        record = {"stage": name, "peak_rss": peak, "seconds": time.perf_counter() - start}
        if self.cuda:
            record["peak_cuda"] = torch.cuda.max_memory_allocated()
        self.stages.append(record)
        self._reset()


def _random_llama(layers: int, width: int):
    """A random Llama with SmolLM2's tokenizer: `width` d_model, 4·width MLP, 64-wide heads, 4:1 GQA."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import unlearn_lens as ul
    from unlearn_lens.models.builtin import ensure_builtin_cache

    tokenizer = AutoTokenizer.from_pretrained(ensure_builtin_cache())
    torch.manual_seed(0)
    heads = width // 64
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    return ul.load(LlamaForCausalLM(config).eval(), tokenizer=tokenizer)


def child(args: argparse.Namespace) -> None:
    """Run one audit with meters around each stage; print the numbers as one JSON line."""
    meter = PeakMeter()
    baseline = _status_kib("VmRSS") * 1024
    import unlearn_lens as ul
    import unlearn_lens.study.audit as audit_module

    timed = audit_module._timed

    @contextmanager
    def metered(console, stage, result=None):
        label = f"{result.method}: {stage}" if result is not None else stage
        with meter.stage(label), timed(console, stage, result):
            yield

    audit_module._timed = metered
    started = time.perf_counter()
    with meter.stage("load"):
        subject = (
            ul.load("smollm2-135m")
            if args.model == "builtin"
            else _random_llama(args.layers, args.width)
        )
    n_params = sum(p.numel() for p in subject.model.parameters())
    config = ul.StudyConfig(methods=tuple(args.methods.split(",")))
    if args.model != "builtin":
        config = config.with_values(known_only=False)
    if args.low_memory:
        config = config.with_values(low_memory=True)
    ul.audit(config, subject=subject, progress=False)
    seconds = time.perf_counter() - started
    meter._reset()
    print(
        json.dumps(
            {
                "model": args.model,
                "params": n_params,
                "baseline_rss": baseline,
                "overall_rss": meter.overall,
                "overall_cuda": meter.overall_cuda if meter.cuda else None,
                "seconds": seconds,
                "stages": meter.stages,
            }
        )
    )


def _table(numbers: dict) -> str:
    params = numbers["params"]
    lines = [
        f"{numbers['model']}: {params / 1e6:.1f} M parameters, audit {numbers['seconds']:.0f} s, "
        f"baseline (interpreter + torch) {numbers['baseline_rss'] / GIB:.2f} GiB",
        f"{'stage':<44} {'peak RSS':>10} {'B/param':>8} {'seconds':>8}",
    ]
    for stage in numbers["stages"]:
        cuda = (
            f"  cuda {stage['peak_cuda'] / GIB:.2f} GiB ({stage['peak_cuda'] / params:.1f} B/param)"
            if "peak_cuda" in stage
            else ""
        )
        lines.append(
            f"{stage['stage'][:44]:<44} {stage['peak_rss'] / GIB:>7.2f} GiB "
            f"{stage['peak_rss'] / params:>7.1f} {stage['seconds']:>8.1f}{cuda}"
        )
    lines.append(
        f"{'overall':<44} {numbers['overall_rss'] / GIB:>7.2f} GiB "
        f"{numbers['overall_rss'] / params:>7.1f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="builtin,random", help="builtin and/or random")
    parser.add_argument("--methods", default="ga,npo", help="audit methods (default ga,npo)")
    parser.add_argument("--low-memory", action="store_true", help="audit with low_memory=True")
    parser.add_argument("--layers", type=int, default=2, help="random Llama blocks (default 2)")
    parser.add_argument("--width", type=int, default=1536, help="random Llama d_model (1536)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        args.model = args.child
        child(args)
        return
    results = []
    for model in args.models.split(","):
        command = [sys.executable, __file__, "--child", model, "--methods", args.methods]
        command += ["--layers", str(args.layers), "--width", str(args.width)]
        command += ["--low-memory"] if args.low_memory else []
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{model}: the child process failed:\n{done.stderr[-4000:]}")
        numbers = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(numbers)
        print(_table(numbers), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
