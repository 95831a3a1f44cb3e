"""Start-up of the example gateway: this tree against a baseline tree, interleaved.

One timed run is a fresh interpreter that imports the gateway, reads its configuration
(file and environment), builds the meter's runtime and the gateway app, and prints how long
that took (``perf_counter`` from before the first import); the process's whole wall time
(interpreter start included) is timed from outside. Rounds alternate the trees, so the
machine's noise falls on both alike; the report is the median of per-round ratios with
their min-max, and the medians in milliseconds.

    .venv/bin/python bench/startup_bench.py --baseline /path/to/baseline/checkout
    git worktree add /tmp/base <rev>    # a baseline checkout of an earlier commit

``--library`` also times what importing ``pydantic_settings`` (the library this project did
not choose for its settings: metering_middleware/_settings.py says why) would add to a
process that has the gateway's code loaded already (pydantic included, through FastAPI).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PROGRAM = """
import time
t0 = time.perf_counter()
from example_gateway.app import create_gateway_app
from example_gateway.config import load_config
from metering_middleware import MeteringRuntime
gateway, metering = load_config({config!r})
app = create_gateway_app(gateway, MeteringRuntime(metering))
import example_gateway
print(time.perf_counter() - t0, example_gateway.__file__)
"""

#: The marginal import cost of a module in a process that already runs the gateway's code.
_LIBRARY = (
    "import example_gateway.app, example_gateway.config, metering_middleware, time; "
    "t0 = time.perf_counter(); import {module}; print(time.perf_counter() - t0)"
)


def _clean_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "GATEWAY_"))}
    env["PYTHONPATH"] = str(tree)  # ahead of the editable install's finder
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def _run(tree: Path, config: Path, workdir: Path) -> tuple[float, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(config=str(config))],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
        env=_clean_env(tree),
    )
    wall = time.perf_counter() - started
    inner, module_file = out.stdout.split()
    if not Path(module_file).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree} was not the tree imported ({module_file})")
    return float(inner), wall


def _library(module: str) -> float | None:
    out = subprocess.run(
        [sys.executable, "-c", _LIBRARY.format(module=module)], capture_output=True, text=True
    )
    return float(out.stdout) if out.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--library", action="store_true", help="also time pydantic_settings")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    trees = {"baseline": args.baseline.resolve(), "this tree": here}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "gateway.toml"
        config.write_text(
            '[gateway]\nport = 8089\n[metering]\nledger_url = "sqlite:///ledger.sqlite"\n'
            'mode = "batched"\n'
        )
        for tree in trees.values():  # warm the file cache and the bytecode of both
            _run(tree, config, workdir)
        inner: dict[str, list[float]] = {name: [] for name in trees}
        wall: dict[str, list[float]] = {name: [] for name in trees}
        for i in range(args.rounds):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                a, b = _run(trees[name], config, workdir)
                inner[name].append(a)
                wall[name].append(b)
    print(f"start-up of the example gateway, {args.rounds} interleaved rounds")
    print("| measure | baseline ms | this tree ms | this / baseline (min-max) |")
    print("| --- | --- | --- | --- |")
    for label, series in (("import + config + app", inner), ("whole process", wall)):
        ratios = [t / b for t, b in zip(series["this tree"], series["baseline"], strict=True)]
        print(
            f"| {label} | {statistics.median(series['baseline']) * 1000:.1f} "
            f"| {statistics.median(series['this tree']) * 1000:.1f} "
            f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    if args.library:
        for module in ("pydantic_settings",):
            times = [_library(module) for _ in range(args.rounds)]
            if None in times:
                print(f"import {module}: not installed (pip install {module})")
                continue
            ms = statistics.median(t for t in times if t is not None) * 1000
            print(f"import {module} on top of the gateway's modules: median {ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
