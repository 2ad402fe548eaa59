"""The typed configuration of a training run (``bidijax train``): one dataclass tree.

``TrainConfig`` holds the run (environment, arm, seeds, iterations, checkpoints), the student's
``PPOConfig`` (``ppo``) and the teacher's ``TeacherConfig`` (``teacher``, with its fine-tuning
settings nested as ``teacher.finetune``: ``bidijax.teacher.finetune.FinetuneConfig``). ``PRESETS`` name
ready-made student batch shapes; ``resolve`` applies a preset, nested overrides and the arm's
hint mode, and checks everything, raising one-line ``ValueError``s. Configs round-trip through
plain dicts (``to_dict`` / ``from_dict``) for ``config.json`` and YAML/JSON config files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .student.config import TRACED, PPOConfig
from .teacher.finetune import FinetuneConfig

#: ``ppo``: no teacher; ``one_way``: teacher hints, the teacher never changes;
#: ``bidirectional``: hints, and the teacher is fine-tuned on the student's feedback;
#: ``teacher_only``: act from the teacher's table, the teacher is fine-tuned on the critic's feedback.
ARMS = ("ppo", "one_way", "bidirectional", "teacher_only")
SCRIPTED_TEACHERS = ("oracle", "noisy_oracle", "uniform")
#: the teacher's numeric settings that differ per lane: scripted teachers and torch teachers are
#: per-seed objects; the batched JAX teacher takes them as per-lane arrays
TEACHER_LANE_FIELDS = ("teacher.eps", "teacher.temperature", "teacher.finetune.lr", "teacher.finetune.kl_coef")
#: fields a sweep varies inside one compiled program (``TrainConfig.cells``): the student's traced
#: hyper-parameters and the teacher's per-lane numbers; any other field changes the program
#: (shapes, structure, which teacher) and runs as a program of its own
TRACED_FIELDS = tuple(f"ppo.{name}" for name in TRACED) + TEACHER_LANE_FIELDS
ACTION_SETS = {"minigrid": 7, "lamorel": 6}

#: Student batch shapes. ``lamorel``: the PPO fine-tuning example of Lamorel used by the reference
#: study (2 environments x 128 steps = 256 frames per update, 4 epochs of minibatches of 8,
#: gamma = lambda = 0.99), so that "40 iterations" and "2100 iterations" mean what they meant there.
#: ``default``: the CLI's default run (a few minutes on 2 CPU cores). ``large``: large-batch throughput.
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(num_envs=64, num_steps=64, num_minibatches=4, update_epochs=4),
    "lamorel": dict(num_envs=2, num_steps=128, num_minibatches=32, update_epochs=4, gamma=0.99, gae_lambda=0.99),
    "large": dict(num_envs=1024, num_steps=32, num_minibatches=8, update_epochs=4),
}


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Which teacher, how it scores, where it computes, and how it learns (``finetune``).

    ``name``: ``default`` (the model shipped with bidijax), a Hugging Face hub id or local model
    directory, or a scripted teacher (``oracle``, ``noisy_oracle`` with ``eps``, ``uniform``).
    """

    name: str = "default"
    eps: float = 0.2  # noisy_oracle: probability that a situation's hint is uniform
    temperature: float = 1.0
    length_norm: bool = False
    #: Lamorel's scoring: the action string's end-of-sequence token is scored too
    score_eos: bool = False
    score_batch_size: int = 64  # prompts per scoring call
    #: where a language-model teacher computes: ``jax`` (every seed's GPT-2 in one jitted,
    #: vmapped program), ``torch`` (one ``HFTeacher`` per seed; any model, LoRA) or ``auto``
    #: (``jax`` for GPT-2 models without LoRA, else ``torch``)
    backend: str = "auto"
    torch_threads: int = 1  # torch CPU threads (0: torch's default); 1 is fastest for small teachers
    #: fine-tuning from the student's feedback (bidirectional and teacher_only arms)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)

    @property
    def scripted(self) -> bool:
        return self.name in SCRIPTED_TEACHERS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole run. ``seed`` is the first seed id; seed ids are ``seed .. seed + num_seeds - 1``."""

    env_id: str = "BabyAI-GoToRedBallNoDists-v0"
    arm: str = "bidirectional"
    hint_mode: str = ""  # student's use of hints; "" = the arm's default (distill; teacher_policy)
    preset: str = "default"
    iterations: int = 60
    num_seeds: int = 3
    seed: int = 0
    table_capacity: int = 4096  # hint-table rows per seed; grows (doubling, one recompile) when full
    #: at most this many rows per seed: beyond it the least recently used situations (last scored
    #: or visited) are evicted from the table, the teacher's caches and the oracle book. -1:
    #: automatic (``resolve`` sets max(2**17, 2 x the steps of one rollout)); 0: no limit
    table_max_rows: int = -1
    checkpoint_every: int = 10  # iterations between checkpoints (and at the end)
    #: teachers work on update t-1's feedback while the student runs update t (hints one
    #: iteration staler; the teacher's time hides behind the student's)
    overlap: bool = False
    #: score each update's new situations between its rollout and its epochs (one host round
    #: trip), so the distillation loss and the feedback cover every step, not only the steps
    #: whose situation was known when the rollout started
    score_first: bool = True
    #: a teacher that raises: ``stop`` the run with one line (the last checkpoint stays intact) or
    #: ``skip`` that phase of the turn (counted in ``teacher_errors``; its situations stay misses)
    teacher_faults: str = "stop"
    #: student-alone evaluation (sampled and greedy) every ``eval_every`` iterations and at the end
    eval_every: int = 5
    eval_episodes: int = 32
    #: ``minigrid``: MiniGrid's 7 actions; ``lamorel``: BabyAI-Text's 6 (no ``done``; BabyAI levels)
    action_set: str = "minigrid"
    tensorboard: bool = False
    wandb: bool = False
    #: local devices the run is split over, lanes (seeds x cells) first, then each lane's envs when
    #: the lanes are fewer (``student.device_grid``): 0 = as many as divide evenly (4 lanes on 4
    #: devices: 4 x 1; 3 lanes x 64 envs: 1 x 4; 2 lanes: 2 x 2); 1 = one device; n = exactly n
    devices: int = 0
    #: share of a GPU's memory JAX preallocates when a torch teacher runs on the same GPU (the rest
    #: is torch's; ``bidijax.gpu_memory``); ignored on CPUs and when the environment sets XLA's own
    jax_gpu_memory_fraction: float = 0.5
    #: cells of a sweep run side by side in this one program: ``{"ppo.lr": [v_0, v_1, ...], ...}``
    #: (traced fields only, ``TRACED_FIELDS``; one value per cell). Every cell runs the run's
    #: ``num_seeds`` seeds: lane ``c * num_seeds + i`` is cell ``c``, seed ``seed + i``. Empty: one cell.
    cells: dict = dataclasses.field(default_factory=dict)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)

    @property
    def uses_teacher(self) -> bool:
        return self.arm != "ppo"

    @property
    def teacher_learns(self) -> bool:
        return self.arm in ("bidirectional", "teacher_only") and not self.teacher.scripted

    @property
    def num_actions(self) -> int | None:
        """Actions of the student and the teacher (``None``: the environment's own)."""
        return ACTION_SETS[self.action_set] if self.action_set != "minigrid" else None

    @property
    def env_overrides(self) -> dict:
        return {} if self.num_actions is None else {"num_actions": self.num_actions}

    @property
    def num_cells(self) -> int:
        return len(next(iter(self.cells.values()))) if self.cells else 1

    @property
    def num_lanes(self) -> int:
        """Lanes of the program: ``num_seeds`` per cell (``len(seeds)``, without building the list)."""
        return self.num_seeds * self.num_cells

    @property
    def seeds(self) -> list[int]:
        """The seed id of every lane of the program (``num_seeds`` per cell, cell after cell)."""
        return list(range(self.seed, self.seed + self.num_seeds)) * self.num_cells

    def seed_of(self, lane: int) -> int:
        """The seed id of lane ``lane`` (``seeds[lane]``, without building the list)."""
        return self.seed + lane % self.num_seeds

    def cell_values(self, cell: int) -> dict:
        """``{field: value}`` of cell ``cell`` (empty without ``cells``)."""
        return {name: values[cell] for name, values in self.cells.items()}

    def cell_ppo(self, cell: int) -> PPOConfig:
        """The student's config as cell ``cell`` runs it."""
        values = self.cell_values(cell)
        return self.ppo.replace(**{name[4:]: v for name, v in values.items() if name.startswith("ppo.")})

    def cell_teacher(self, cell: int) -> "TeacherConfig":
        """The teacher's config as cell ``cell`` runs it."""
        values = {name[len("teacher."):]: v for name, v in self.cell_values(cell).items() if name.startswith("teacher.")}
        tuned = {name[len("finetune."):]: values.pop(name) for name in list(values) if name.startswith("finetune.")}
        return dataclasses.replace(self.teacher, finetune=dataclasses.replace(self.teacher.finetune, **tuned), **values)

    def lane_teachers(self) -> list["TeacherConfig"]:
        """The teacher's config of every lane (``seeds`` order)."""
        return [self.cell_teacher(cell) for cell in range(self.num_cells) for _ in range(self.num_seeds)]

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def arm_hint_mode(arm: str, hint_mode: str = "") -> str:
    """The student's hint mode for an arm (``hint_mode`` overrides it where the arm allows)."""
    if arm == "ppo":
        return "none"
    if arm == "teacher_only":
        return "teacher_policy"
    return hint_mode or "distill"


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")


def resolve(config: TrainConfig) -> TrainConfig:
    """Check a config and fill in what the arm and preset imply (the config that is saved)."""
    _check_choice("arm", config.arm, ARMS)
    _check_choice("preset", config.preset, tuple(PRESETS))
    if config.hint_mode:
        allowed = {"ppo": ("none",), "teacher_only": ("teacher_policy",)}.get(config.arm, ("distill", "prior"))
        _check_choice(f"hint_mode for the {config.arm} arm", config.hint_mode, allowed)
    _check_choice("action_set", config.action_set, tuple(ACTION_SETS))
    _check_choice("teacher_faults", config.teacher_faults, ("stop", "skip"))
    if config.arm != "ppo" and config.env_id.startswith("gymnax:"):
        raise ValueError(f"arm={config.arm!r} needs a grid world whose situations a teacher can read (BabyAI-* or Navix-* ids), "
                         f"not {config.env_id!r}; gymnax environments run with --arm ppo")
    if config.action_set != "minigrid" and not config.env_id.startswith("BabyAI-"):
        raise ValueError(f"action_set={config.action_set!r} applies to BabyAI levels only, not {config.env_id!r}")
    _check_cells(config)
    for name in ("iterations", "num_seeds", "table_capacity", "checkpoint_every", "eval_every", "eval_episodes"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}={getattr(config, name)} must be >= 1")
    if not 0 < config.jax_gpu_memory_fraction < 1:
        raise ValueError(f"jax_gpu_memory_fraction={config.jax_gpu_memory_fraction} must lie strictly between 0 and 1")
    if config.devices < 0:
        raise ValueError(f"devices={config.devices} must be >= 0 (0: as many local devices as the lanes and envs divide)")
    if not 0 <= config.seed < 2**31 - config.num_seeds:
        raise ValueError(f"seed={config.seed} must lie in [0, 2**31 - num_seeds)")
    need_rows = config.ppo.miss_buffer_size or config.ppo.num_envs * config.ppo.num_steps
    if config.table_max_rows == -1:
        config = config.replace(table_max_rows=max(2**17, 2 * config.ppo.num_envs * config.ppo.num_steps))
    if config.table_max_rows and not need_rows <= config.table_max_rows <= 2**28:
        raise ValueError(
            f"table_max_rows={config.table_max_rows} must be -1 (automatic), 0 (no limit) or between the miss buffer's "
            f"{need_rows} rows (one rollout's new situations) and 2**28"
        )
    if config.table_capacity > 2**28:
        raise ValueError(f"table_capacity={config.table_capacity} is too large; at most 2**28 rows per seed")
    need, have = memory_estimate(config), _physical_memory()
    if have and need > 0.8 * have:
        cells = f"{config.num_cells} cells x " if config.cells else ""
        raise ValueError(
            f"{cells}num_seeds={config.num_seeds} x num_envs={config.ppo.num_envs} x num_steps={config.ppo.num_steps} "
            f"needs ~{need / 2**30:.1f} GiB; this machine has {have / 2**30:.1f} GiB"
        )
    _check_teacher(config.teacher)
    mode = arm_hint_mode(config.arm, config.hint_mode)
    # schedules (beta, learning rate) span the run; PPOConfig checks batch shapes in __post_init__
    ppo = config.ppo.replace(hint_mode=mode, num_updates=config.iterations)
    return config.replace(hint_mode=mode, ppo=ppo)


def _check_teacher(t: TeacherConfig) -> None:
    _check_choice("teacher backend", t.backend, ("auto", "jax", "torch"))
    if not 0.0 <= t.eps <= 1.0:
        raise ValueError(f"teacher eps={t.eps} must lie in [0, 1]")
    if t.score_batch_size < 1:
        raise ValueError(f"teacher score_batch_size={t.score_batch_size} must be >= 1")
    if not 0 < t.temperature < float("inf"):
        raise ValueError(f"teacher temperature={t.temperature} must be a finite number > 0")
    if t.torch_threads < 0:
        raise ValueError(f"teacher torch_threads={t.torch_threads} must be >= 0")


def _check_cells(config: TrainConfig) -> None:
    """``cells``: traced fields only, one finite value per cell, equally many, each cell valid."""
    if not isinstance(config.cells, dict):
        raise ValueError(f"cells={config.cells!r} must be a mapping of field -> list of values")
    sizes = set()
    for name, values in config.cells.items():
        if name not in TRACED_FIELDS:
            raise ValueError(f"cells field {name!r} cannot vary inside one program; allowed: {', '.join(TRACED_FIELDS)}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"cells[{name!r}]={values!r} must be a non-empty list of numbers")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"cells[{name!r}] value {v!r} is not a number")
        sizes.add(len(values))
    if len(sizes) > 1:
        raise ValueError(f"cells lists have different lengths {sorted(sizes)}; one value per cell in every list")
    for c in range(config.num_cells):
        config.cell_ppo(c)  # PPOConfig and FinetuneConfig check each value (one-line ValueError naming it)
        _check_teacher(config.cell_teacher(c))


def memory_estimate(config: TrainConfig) -> int:
    """A rough upper estimate of a run's memory in bytes: per seed ~1 KiB per rollout step
    (observation, transition, scene, percept), ~4 KiB per environment, 40 B per hint-table row
    and ~8 MiB for a small teacher with its optimiser; refused up front when beyond the machine."""
    p = config.ppo
    per_seed = 1024 * p.num_envs * p.num_steps + 4096 * p.num_envs + 40 * config.table_capacity + (8 << 20)
    return int(config.num_lanes * per_seed)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def with_preset(config: TrainConfig, preset: str, ppo_overrides: dict | None = None) -> TrainConfig:
    """``config`` with the student's batch shape of ``preset``, then ``ppo_overrides`` on top."""
    _check_choice("preset", preset, tuple(PRESETS))
    ppo = _replace_checked(config.ppo, {**PRESETS[preset], **(ppo_overrides or {})}, "ppo")
    return config.replace(preset=preset, ppo=ppo)


# ---------------------------------------------------------------------------------------------
# dicts (config.json, config files)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _replace_checked(obj, changes: dict, where: str):
    """``obj`` with ``changes`` (a possibly nested dict), each value coerced to its field's type."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"unknown {where} option {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
    typed = {}
    for f in dataclasses.fields(obj):
        if f.name not in changes:
            continue
        current, value = getattr(obj, f.name), changes[f.name]
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{f.name} must be a mapping, got {type(value).__name__}")
            typed[f.name] = _replace_checked(current, value, f"{where}.{f.name}")
        else:
            typed[f.name] = _coerce(value, type(current), f"{where}.{f.name}")
    return dataclasses.replace(obj, **typed)


def _coerce(value, kind: type, name: str):
    if isinstance(value, bool) and kind is not bool:  # YAML's ``true`` is no number
        raise ValueError(f"{name}={value!r} is not a valid {kind.__name__}")
    if isinstance(value, kind):
        return value
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a valid {kind.__name__}") from None


def nested(flat: dict) -> dict:
    """``{"ppo.lr": x, "arm": y}`` -> ``{"ppo": {"lr": x}, "arm": y}``."""
    out: dict = {}
    for key, value in flat.items():
        *heads, tail = key.split(".")
        node = out
        for head in heads:
            node = node.setdefault(head, {})
            if not isinstance(node, dict):
                raise ValueError(f"field {key!r} is not inside a config section")
        node[tail] = value
    return out


def first_difference(old, new, where: str, prefix: str = "") -> str | None:
    """The first place where two nested dicts/lists differ, as ``"a.b: OLD in WHERE, NEW now"``
    (``None`` if equal): what the one-line "changed config" errors name."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return next(filter(None, (first_difference(old.get(k), new.get(k), where, f"{prefix}{k}.") for k in keys)), None)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return next(filter(None, (first_difference(x, y, where, f"{prefix}{i}.") for i, (x, y) in enumerate(zip(old, new)))), None)
    return None if old == new else f"{prefix.rstrip('.')}: {old!r} in {where}, {new!r} now"


def merge_dicts(a: dict, b: dict) -> dict:
    """``a`` with ``b`` on top, nested mappings merged key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(d: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A config from a (possibly partial) nested dict over ``base`` (defaults).

    A ``preset`` key applies that preset's batch shape before the dict's ``ppo`` entries.
    """
    base = base or TrainConfig()
    d = dict(d)
    ppo = d.pop("ppo", None) or {}
    teacher = d.pop("teacher", None) or {}
    if not isinstance(ppo, dict) or not isinstance(teacher, dict):
        raise ValueError("config entries 'ppo' and 'teacher' must be mappings")
    preset = d.pop("preset", None)
    out = _replace_checked(base, d, "config")
    if preset is not None:
        out = with_preset(out, str(preset), ppo)
    else:
        out = out.replace(ppo=_replace_checked(out.ppo, ppo, "ppo"))
    return out.replace(teacher=_replace_checked(out.teacher, teacher, "teacher"))


def load_file(path: str) -> dict:
    """A nested dict from a YAML (``.yaml``/``.yml``) or JSON config file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise ValueError(f"cannot read config file {path!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path!r} is not text (UTF-8): a YAML or JSON file of settings is expected") from None
    if not text.strip():
        raise ValueError(f"config file {path!r} is empty: it must hold a mapping of settings (e.g. iterations: 10)")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise ValueError(f"config file {path!r} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{str(err).splitlines()[0]}") from None
    if data is None:  # comments only
        raise ValueError(f"config file {path!r} holds no settings: it must hold a mapping of settings (e.g. iterations: 10)")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping, got {type(data).__name__}")
    return data


def default_config() -> TrainConfig:
    """The CLI's default run: the default preset applied."""
    return with_preset(TrainConfig(), "default")
