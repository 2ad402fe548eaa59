"""GIFs of a trained student (``bidijax render RUN_DIR``).

The run's last checkpoint is restored (student parameters, environments, hint tables); the
student's own rollout function plays on, and the first environment's steps are replayed through
``env.step`` to recover the full states. Each frame shows the whole grid (agent as a triangle),
the mission, the student's action and the teacher's hint for that situation (or "no hint" when
the situation is not in the table; "no teacher" in a ppo run).
"""

from __future__ import annotations

import os

import numpy as np

from . import rundir
from .envs import constants as C

CELL = 28
PALETTE = {  # MiniGrid's colours
    C.RED: (255, 0, 0), C.GREEN: (0, 200, 0), C.BLUE: (0, 0, 255),
    C.PURPLE: (112, 39, 195), C.YELLOW: (255, 255, 0), C.GREY: (100, 100, 100),
}  # fmt: skip


def draw_frame(scene, lines: list[str]):
    """A PIL image of a ``Scene`` (host arrays) with text ``lines`` underneath."""
    from PIL import Image, ImageDraw

    cells = np.asarray(scene.cells)
    h, w = cells.shape[:2]
    text_h = 14 * len(lines) + 6
    img = Image.new("RGB", (max(w * CELL, 360), h * CELL + text_h), (0, 0, 0))
    d = ImageDraw.Draw(img)
    for r in range(h):
        for c in range(w):
            obj, colour, state = (int(v) for v in cells[r, c])
            x0, y0 = c * CELL, r * CELL
            box = (x0, y0, x0 + CELL - 1, y0 + CELL - 1)
            d.rectangle(box, outline=(40, 40, 40))
            rgb = PALETTE.get(colour, (200, 200, 200))
            m = CELL // 5
            if obj == C.WALL:
                d.rectangle(box, fill=(100, 100, 100))
            elif obj == C.BALL:
                d.ellipse((x0 + m, y0 + m, x0 + CELL - m, y0 + CELL - m), fill=rgb)
            elif obj == C.KEY:
                d.rectangle((x0 + 2 * m, y0 + m, x0 + 3 * m, y0 + CELL - m), fill=rgb)
                d.rectangle((x0 + m, y0 + m, x0 + 4 * m, y0 + 2 * m), fill=rgb)
            elif obj == C.BOX:
                d.rectangle((x0 + m, y0 + m, x0 + CELL - m, y0 + CELL - m), outline=rgb, width=3)
            elif obj == C.DOOR:
                d.rectangle(box, outline=rgb, width=3, fill=None if state == C.OPEN else tuple(v // 2 for v in rgb))
            elif obj == C.GOAL:
                d.rectangle(box, fill=(0, 200, 0))
            elif obj == C.LAVA:
                d.rectangle(box, fill=(255, 128, 0))
    r, c = (int(v) for v in np.asarray(scene.agent_pos))
    cx, cy, s = c * CELL + CELL / 2, r * CELL + CELL / 2, CELL * 0.38
    dr, dc = C.DIR_VEC[int(np.asarray(scene.agent_dir))]
    tip = (cx + dc * s, cy + dr * s)
    left = (cx - dc * s - dr * s * 0.8, cy - dr * s + dc * s * 0.8)
    right = (cx - dc * s + dr * s * 0.8, cy - dr * s - dc * s * 0.8)
    d.polygon([tip, left, right], fill=(255, 80, 80))
    for i, line in enumerate(lines):
        d.text((4, h * CELL + 3 + 14 * i), line, fill=(255, 255, 255))
    return img


def _hint_text(probs: np.ndarray, hit: bool, arm: str = "bidirectional") -> str:
    if arm == "ppo":
        return "no teacher (ppo arm)"
    if not hit:
        return "teacher: no hint (situation not in the table)"
    a = int(np.argmax(probs))
    return f"teacher hint: {C.ACTION_STRINGS[a]} ({probs[a]:.2f})"


def load_lane(run_dir: str, seed_index: int):
    """``(loop, runner, table)`` of lane ``seed_index`` from the run's last checkpoint: a ``Loop``
    on one device without teachers, the lane's student state and its hint table. A checkpoint of
    several processes (``--num-processes``) is read from the part of the process that ran the lane."""
    import jax

    from . import config as cfg
    from .hints import empty
    from .loop import Loop
    from .multihost import Processes
    from .teaching import load_tables

    config = cfg.from_dict(rundir.read_config(run_dir))
    ckpt = rundir.latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"run directory {run_dir!r} has no checkpoint yet")
    lanes = config.num_lanes  # num_seeds per sweep cell
    if not 0 <= seed_index < lanes:
        raise ValueError(f"seed index {seed_index} is out of range; the run has {lanes} seed(s)")
    count = int(rundir.checkpoint_meta(ckpt).get("processes", 1))
    block = lanes // count  # each process ran a contiguous block of lanes (multihost.lane_block)
    part = Processes(seed_index // block, count)
    loop = Loop(config.replace(devices=1), teachers=[])  # one lane replayed on one device
    hypers = jax.tree.map(lambda x: x[:block], loop.hypers())
    like = jax.eval_shape(loop._init, jax.numpy.zeros((block, 2), jax.numpy.uint32), hypers)
    _, runners = rundir.load_checkpoint(ckpt, like, processes=part)
    tables = load_tables(os.path.join(rundir.part_dir(ckpt, part), "tables.npz"))
    local = seed_index - part.index * block
    runner = jax.tree.map(lambda x: x[local], runners)
    return loop, runner, tables[local] if tables else empty(1, loop.num_actions)


def render_run(run_dir: str, out: str | None = None, episodes: int = 3, seed_index: int = 0, max_frames: int = 400) -> str:
    """Write a GIF of ``episodes`` episodes of seed ``seed_index``'s student; returns its path."""
    import jax

    from .envs import scene_of
    from .envs.scene import mission_of
    from .envs.text import mission_text
    from .student import make_train

    loop, runner, table = load_lane(run_dir, seed_index)
    collect = jax.jit(make_train(loop.config.ppo, loop.env).collect)
    step = jax.jit(loop.env.step)
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)

    frames, done = [], 0
    while done < episodes and len(frames) < max_frames:
        ro = collect(runner, table)
        traj = jax.device_get(ro.traj)
        ts = first(runner.timestep)
        for t in range(loop.config.ppo.num_steps):
            if bool(traj.valid[t, 0]):
                scene = jax.device_get(scene_of(ts.state))
                mission = mission_text(np.asarray(jax.device_get(mission_of(ts.state))))
                lines = [
                    f"{mission}   (episode {done + 1}, step {int(ts.t)})",
                    f"student: {C.ACTION_STRINGS[int(traj.action[t, 0])]}",
                    _hint_text(np.asarray(traj.teacher[t, 0]), bool(traj.hit[t, 0]), loop.config.arm),
                ]
                frames.append(draw_frame(scene, lines))
            ts = step(ts, traj.action[t, 0])
            if bool(traj.valid[t, 0]) and int(traj.next_type[t, 0]) > 0:
                done += 1
                outcome = "success" if int(traj.next_type[t, 0]) == 2 and float(traj.reward[t, 0]) > 0 else "time out"
                frames.append(draw_frame(jax.device_get(scene_of(ts.state)), [f"episode {done}: {outcome}", "", ""]))
                if done >= episodes:
                    break
        runner = runner.replace(timestep=ro.timestep, key=ro.key)
    out = out or os.path.join(run_dir, "episodes.gif")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=250, loop=0)
    return out
