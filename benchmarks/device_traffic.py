"""What crosses between devices in one student update, read from the compiled programs.

Builds the real loop (``bidijax.loop.Loop``) for ``--lanes`` seeds at ``--preset`` on
``--devices`` forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``, set
here before JAX starts), places the student and tables as the loop does (lanes split, then each
lane's environments when the lanes are fewer than the devices), compiles the programs one
iteration runs (``ppo``: the update; teacher arms with ``score_first``: rollout, then epochs) and
lists their collectives (all-reduce, all-gather, all-to-all, collective-permute,
reduce-scatter). Each is counted as often as it runs: the trip counts of the ``while`` loops that
hold it (XLA's ``known_trip_count``; a loop without one, e.g. the episode loop of an evaluation,
counts once and is flagged). Bytes are each collective's result per device (for an all-reduce
its payload; a ring all-reduce moves about twice that per device over the wire).

    python benchmarks/device_traffic.py --lanes 1,2,3,4 [--devices 4] [--preset default] [--arm ppo]
"""

from __future__ import annotations

import argparse
import os
import re
import sys

OPS = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
_BYTES = {"f32": 4, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "s8": 1, "u8": 1, "pred": 1, "s64": 8, "u64": 8, "f64": 8}
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_WHILE = re.compile(r"while\(.*condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CALLS = re.compile(r"(?:to_apply|calls|branch_computations|true_computation|false_computation)=\{?%?([\w.\-, %]+)\}?")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def nbytes(shapes: str) -> int:
    """Bytes of an HLO shape string (a tuple's elements summed)."""
    total = 0
    for dtype, dims in _SHAPE.findall(shapes):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _BYTES.get(dtype, 4)
    return total


def collectives(hlo: str) -> list[dict]:
    """Every collective of an optimised HLO module with the number of times one call runs it."""
    body: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        m = _COMP.match(line.strip()) if not line.startswith(" ") else None
        if m:
            name = m.group(1)
            body[name] = []
        elif name is not None:
            body[name].append(line.strip())
    runs = {n: 0 for n in body}
    entry = next(n for n in body if n.startswith("main")) if any(n.startswith("main") for n in body) else list(body)[-1]
    unknown: set[str] = set()

    def visit(comp: str, times: int, flagged: bool) -> None:
        runs[comp] += times
        if flagged:
            unknown.add(comp)
        for ins in body.get(comp, []):
            w = _WHILE.search(ins)
            if w:
                t = _TRIPS.search(ins)
                for loop_part in w.groups():  # the condition runs once more than the body: ignored
                    visit(loop_part, times * (int(t.group(1)) if t else 1), flagged or not t)
                continue
            for c in _CALLS.findall(ins):
                for callee in re.split(r"[,\s%]+", c):
                    if callee in body and callee != comp:
                        visit(callee, times, flagged)

    visit(entry, 1, False)
    found = []
    for comp, lines in body.items():
        for ins in lines:
            op = next((o for o in OPS if re.search(rf"\s{o}(-start)?\(", ins)), None)
            if op is None or not runs[comp]:
                continue
            shape = ins.split("=", 1)[1].split(op, 1)[0]
            found.append(dict(op=op, bytes=nbytes(shape), runs=runs[comp], loop_unknown=comp in unknown))
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", default="1,2,3,4")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--arm", default="ppo", help="ppo (the update) or one_way (rollout and epochs, oracle teacher)")
    args = ap.parse_args(argv)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from bidijax import config as cfg
    from bidijax.loop import Loop

    print(f"# {args.preset} preset, arm {args.arm}, {args.devices} devices; bytes per device per student update")
    print("| lanes | grid (lanes x envs) | collectives run | all-reduce | all-gather | all-to-all | permute | total |")
    print("|---|---|---|---|---|---|---|---|")
    for lanes in [int(x) for x in args.lanes.split(",")]:
        c = cfg.with_preset(cfg.TrainConfig(), args.preset).replace(arm=args.arm, num_seeds=lanes, iterations=1)
        if args.arm != "ppo":
            c = c.replace(teacher=cfg.TeacherConfig(name="oracle"))
        loop = Loop(c)
        state = loop.init()
        tables = loop.tables_in(state.tables)
        if loop.score_first:
            ro = loop._rollout(state.runners, tables)
            programs = [loop._rollout.lower(state.runners, tables), loop._learn.lower(state.runners, ro[0], tables)]
        else:
            programs = [loop._update.lower(state.runners, tables)]
        found = [x for p in programs for x in collectives(p.compile().as_text())]
        by = {op: sum(x["bytes"] * x["runs"] for x in found if x["op"] == op) for op in OPS}
        grid = "1 x 1" if loop.mesh is None else f"{loop.mesh.shape['seed']} x {loop.mesh.shape['env']}"
        flag = " (a loop without a known trip count counted once)" if any(x["loop_unknown"] for x in found) else ""
        kib = lambda b: f"{b / 1024:,.1f} KiB"
        print(f"| {lanes} | {grid} | {sum(x['runs'] for x in found):,}{flag} | {kib(by['all-reduce'])} | {kib(by['all-gather'])} | "
              f"{kib(by['all-to-all'])} | {kib(by['collective-permute'])} | {kib(sum(by.values()))} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
