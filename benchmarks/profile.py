"""Where the pipeline's CPU goes: a sampled profile of every thread, split by area.

``record`` runs a command (by default ``python -m pipeline`` with the flags after ``--``) under the
``py-spy`` sampler (``--threads --gil``: only the thread holding the GIL is sampled, which is the
CPU a GIL-bound process spends), keeps the collapsed stacks, writes a flame graph SVG beside them
and prints the split by area. ``report`` does the split of an existing collapsed-stack file::

    python -m benchmarks.profile record --out /tmp/tf-prof -- \
        --input t.jsonl --output /tmp/out --overwrite --base_url http://127.0.0.1:PORT/v1 --quiet
    python -m benchmarks.profile record --out /tmp/sdk-prof --module benchmarks.sdk_baseline -- \
        --input t.jsonl --base_url http://127.0.0.1:PORT/v1
    python -m benchmarks.profile report /tmp/tf-prof.txt

When the sampler cannot attach (no ptrace), ``record --profiler yappi`` runs the pipeline
in-process under ``yappi`` (CPU clock, every thread: the engine's event loop runs in a thread of its
own that ``cProfile`` would not see) and splits each function's own time by the same rules.

How a sample is attributed: frames are read from the leaf towards the root; frames of generic
modules (``typing``, ``functools``, ``threading``...) are skipped, so that their time goes to the
library that called them; the first remaining frame's rule names the area. Compiled code (Beam's
Cython ``coder_impl`` and ``operations``, pydantic-core, the ``json`` C accelerator) has no frame
of its own: its time lands on the nearest Python frame, so "Beam runner" includes the coders.
"""

from __future__ import annotations

import argparse
import collections
import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence

Stack = tuple[tuple[str, ...], int]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?):\d+\)$")

#: Modules whose frames never name an area: their time goes to the caller's area.
NEUTRAL = re.compile(
    r"^(typing|typing_extensions|functools|contextlib|copy|copyreg|enum|inspect|dataclasses|abc|"
    r"types|operator|weakref|_weakrefset|threading|warnings|codecs|random|bisect|ipaddress|"
    r"collections/__init__|<frozen abc>|<frozen _collections_abc>|<string>|re/.*|"
    r"encodings/.*)(\.py)?$")

#: Whole-stack rules, tried first: (area, regex any frame's "func (path" must match).
STACK_RULES = (
    ("start-up: imports", re.compile(r"^_find_and_load")),
    ("start-up: build, preflight, submit", re.compile(
        r"^(build|check_endpoint|check_input|check_output|from_options) \(pipeline/"
        r"|^Pipeline\.__init__ |^PValue\.__or__ |^_NamedPTransform|^Pipeline\.to_runner_api"
        r"|^create_stages ")),
)

#: Frame rules, leaf to root, first match wins: (area, path regex, function regex or None).
FRAME_RULES = (
    ("DoFn <-> loop handoff", r"^asyncio/",
     (r"run_coroutine_threadsafe|_chain_future|_copy_future_state|"
      r"_set_concurrent_future_state|call_soon_threadsafe|_write_to_self|_read_from_self")),
    ("DoFn <-> loop handoff", r"^concurrent/futures/", None),
    ("DoFn <-> loop handoff", r"^transforms/llm/(dofn|engine)\.py$",
     r"^_CallModelFn\.|LlmEngine\.submit"),
    ("rate limiter", r"^transforms/limits/", None),
    ("metrics + live progress",
     (r"^(transforms/(metrics|progress)\.py|apache_beam/metrics/|"
      r"apache_beam/io/components/adaptive_throttler)"), None),
    ("logging", r"^(logging/|transforms/logs\.py)", None),
    ("JSON encode/decode", r"^(json/|orjson|jiter)", None),
    ("SDK: response parse (pydantic)",
     (r"^(openai/_models\.py|openai/_legacy_response\.py|openai/_response\.py|pydantic/|"
      r"pydantic_core/|openai/types/)"), None),
    ("SDK: request build + client plumbing", r"^openai/", None),
    ("HTTP transport (httpx/httpcore/h11/anyio)",
     (r"^(httpx2?|httpcore2?|h11|anyio|sniffio|aiohttp|yarl|multidict|certifi|idna|ssl|socket|"
      r"urllib/parse|email/)(/|\.py)"), None),
    ("asyncio event loop", r"^(asyncio/|selectors\.py)", None),
    ("engine: prompts, retry, records of a call",
     (r"^(transforms/(llm/.*|prompts|retry|errors|pricing|store|structured)\.py|jinja2/|"
      r"markupsafe/|tenacity/|<template>)"), None),
    ("read (ours + Beam file IO)",
     (r"^(transforms/read\.py|apache_beam/io/(fileio|filesystems?|localfilesystem|"
      r"filebasedsource)\.py)"), None),
    ("validate + dedupe", r"^transforms/validate\.py$", None),
    ("records (Ticket, Result)", r"^transforms/records\.py$", None),
    ("batch (key + GroupIntoBatches)",
     (r"^(transforms/batch\.py|apache_beam/transforms/(util|userstate|timeutil)\.py|"
      r"apache_beam/utils/sharded_key)"), None),
    ("write (sinks + TextIO)",
     (r"^(transforms/sinks\.py|apache_beam/io/(textio|filebasedsink|iobase|"
      r"filesystemio)\.py)"), None),
    ("Beam runner + coders (per element)", r"^apache_beam/", None),
    ("driver (summary, report)", r"^pipeline/", None),
)
_COMPILED = tuple((area, re.compile(path), re.compile(func) if func else None)
                  for area, path, func in FRAME_RULES)
OTHER = "other"


def parse_frame(frame: str) -> tuple[str, str]:
    """``"func (path:line)"`` → (func, path); a frame without a path → (frame, "")."""
    match = _FRAME.match(frame)
    return (match["func"], match["path"]) if match else (frame, "")


def classify(frames: Sequence[str]) -> str:
    """The area of one sample, its frames root first (see the module docstring)."""
    parsed = [parse_frame(f) for f in frames]
    for area, rule in STACK_RULES:
        if any(rule.search(f"{func} ({path}") for func, path in parsed):
            return area
    for func, path in reversed(parsed):
        if not path or NEUTRAL.match(path):
            continue
        for area, path_rule, func_rule in _COMPILED:
            if path_rule.search(path) and (func_rule is None or func_rule.search(func)):
                return area
    return OTHER


def read_collapsed(path: str) -> list[Stack]:
    """Stacks of a collapsed-stack file (``frame;frame;... count`` per line), root first.

    The sampler's leading ``process ...`` and ``thread ...`` pseudo-frames are dropped.
    """
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            text, _, count = line.rpartition(" ")
            frames = tuple(f for f in text.split(";")
                           if not f.startswith(("process ", "thread ")))
            stacks.append((frames, int(count)))
    return stacks


def split(stacks: Iterable[Stack]) -> dict[str, int]:
    """Samples per area, largest first."""
    areas: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        areas[classify(frames)] += count
    return dict(areas.most_common())


def format_split(areas: dict[str, int], per_item: int | None = None, rate: float = 200.0) -> str:
    """A Markdown table: area, samples, share; with ``per_item``, also ms per ticket."""
    total = sum(areas.values()) or 1
    head = "| area | samples | share |" + (" ms / ticket |" if per_item else "")
    lines = [head, "|---|---:|---:|" + ("---:|" if per_item else "")]
    for area, count in areas.items():
        row = f"| {area} | {count} | {100.0 * count / total:.1f} % |"
        if per_item:
            row += f" {1000.0 * count / rate / per_item:.3f} |"
        lines.append(row)
    lines.append(f"| total | {total} | 100 % |" + (
        f" {1000.0 * total / rate / per_item:.3f} |" if per_item else ""))
    return "\n".join(lines)


_COLOURS = ("#e0744f", "#e8a33d", "#d6c44a", "#9cc44f", "#4fb58c", "#4fa6c4", "#6f7fd6",
            "#a46fd6", "#d66fb6", "#c4a484", "#8fa3a3", "#c46f6f")


def write_svg(stacks: Sequence[Stack], path: str, title: str = "CPU profile",
              min_share: float = 0.001) -> None:
    """Writes a flame graph (root at the bottom) as a standalone SVG; colour = area.

    Frames narrower than ``min_share`` of the total are left out; hovering shows their name,
    samples and share.
    """
    root: dict = {"n": 0, "kids": {}}
    for frames, count in stacks:
        root["n"] += count
        node = root
        for frame in frames:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}, "area": None})
            node["n"] += count
        node["leaf_area"] = classify(frames)
    areas = list(split(stacks))
    width, row = 1600.0, 17
    total = max(1, root["n"])
    rects: list[str] = []
    depth_max = [0]

    def walk(node: dict, x: float, depth: int, path: tuple) -> None:
        for frame, kid in sorted(node["kids"].items()):
            share = kid["n"] / total
            if share >= min_share:
                w = share * width
                area = classify(path + (frame,))
                colour = _COLOURS[areas.index(area) % len(_COLOURS)] if area in areas else "#ccc"
                depth_max[0] = max(depth_max[0], depth)
                label = html.escape(frame)
                text = html.escape(frame.split(" (")[0][: int(w / 7)]) if w > 30 else ""
                rects.append(
                    f'<g><title>{label}\n{kid["n"]} samples, {100 * share:.2f} %, {area}</title>'
                    f'<rect x="{x:.1f}" y="{{Y{depth}}}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="{colour}"/><text x="{x + 3:.1f}" y="{{T{depth}}}">{text}</text></g>')
                walk(kid, x, depth + 1, path + (frame,))
            x += share * width

    walk(root, 0.0, 0, ())
    height = (depth_max[0] + 3) * row
    body = "\n".join(rects)
    for depth in range(depth_max[0] + 1):
        y = height - (depth + 2) * row
        body = body.replace(f"{{Y{depth}}}", str(y)).replace(f"{{T{depth}}}", str(y + row - 5))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
            f'font-family="monospace" font-size="11"><text x="4" y="14">'
            f'{html.escape(title)} ({total} samples)</text>\n{body}\n</svg>\n')


def record_pyspy(cmd: Sequence[str], out: str, rate: int) -> int:
    """Runs ``cmd`` under the sampler; writes ``out`` (collapsed stacks). Returns its exit code."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.call([spy, "record", "--rate", str(rate), "--threads", "--gil",
                            "--subprocesses", "--format", "raw", "-o", out, "--", *cmd])


def record_yappi(argv: Sequence[str], out: str) -> int:
    """Runs ``pipeline.run.run(argv)`` under yappi; writes one pseudo-stack per function.

    Each line is ``func (path:line) own_microseconds``: only a function's own CPU, no callers,
    so generic modules cannot pass their time to the caller (they count as ``other``).
    """
    import yappi  # pylint: disable=import-outside-toplevel

    from pipeline.run import run  # pylint: disable=import-outside-toplevel

    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    try:
        code = run(list(argv))
    finally:
        yappi.stop()
    with open(out, "w", encoding="utf-8") as handle:
        for stat in yappi.get_func_stats():
            own = int(stat.tsub * 1e6)
            if own:
                where = _relative(stat.module)
                handle.write(f"{stat.name} ({where}:{stat.lineno}) {own}\n")
    return code


def _relative(path: str) -> str:
    """``.../site-packages/openai/x.py`` → ``openai/x.py``, as the sampler names files."""
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3" else tail
    here = os.getcwd() + os.sep
    return path.removeprefix(here)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="profile a run, then split it")
    rec.add_argument("--out", required=True, help="prefix: writes PREFIX.txt and PREFIX.svg")
    rec.add_argument("--module", default="pipeline", help="the module to run (python -m)")
    rec.add_argument("--profiler", choices=("py-spy", "yappi"), default="py-spy")
    rec.add_argument("--rate", type=int, default=200, help="samples per second")
    rec.add_argument("--tickets", type=int, help="tickets in the run: adds ms per ticket")
    rec.add_argument("args", nargs=argparse.REMAINDER, help="-- then the module's flags")
    rep = sub.add_parser("report", help="split an existing collapsed-stack file")
    rep.add_argument("file")
    rep.add_argument("--svg", help="also write a flame graph here")
    rep.add_argument("--rate", type=int, default=200)
    rep.add_argument("--tickets", type=int)
    args = parser.parse_args(argv)
    if args.command == "report":
        stacks = read_collapsed(args.file)
        if args.svg:
            write_svg(stacks, args.svg, title=os.path.basename(args.file))
        print(format_split(split(stacks), args.tickets, args.rate))
        return 0
    flags = args.args[1:] if args.args[:1] == ["--"] else args.args
    collapsed = args.out + ".txt"
    if args.profiler == "yappi":
        if args.module != "pipeline":
            parser.error("--profiler yappi profiles the pipeline only")
        code = record_yappi(flags, collapsed)
        rate = 1e6  # the "samples" are microseconds of CPU
    else:
        code = record_pyspy([sys.executable, "-m", args.module, *flags], collapsed, args.rate)
        rate = args.rate
    stacks = read_collapsed(collapsed)
    write_svg(stacks, args.out + ".svg", title=f"python -m {args.module}")
    print(format_split(split(stacks), args.tickets, rate))
    print(f"collapsed stacks: {collapsed}; flame graph: {args.out}.svg", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
