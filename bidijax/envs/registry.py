"""``make(env_id, **overrides)``: BabyAI GoTo levels and every navix environment."""

from __future__ import annotations

from . import constants as C

#: BabyAI ids -> keyword arguments of ``babyai.make_goto`` (MiniGrid's settings for each level).
BABYAI_LEVELS = {
    "BabyAI-GoToRedBallNoDists-v0": dict(room_size=8, target=(C.BALL, C.RED), num_dists=0),
    "BabyAI-GoToRedBallGrey-v0": dict(
        room_size=8, target=(C.BALL, C.RED), num_dists=7, grey_dists=True, check_reachable=True
    ),
    "BabyAI-GoToRedBall-v0": dict(room_size=8, target=(C.BALL, C.RED), num_dists=7, check_reachable=True),
    "BabyAI-GoToObj-v0": dict(room_size=8, target=None, num_dists=1),
    "BabyAI-GoToLocal-v0": dict(room_size=8, target=None, num_dists=8, check_reachable=True),
}

_BABYAI_OVERRIDES = ("room_size", "max_steps", "num_dists", "gamma", "num_actions")


def _navix_max_steps(env_id: str, height: int, width: int) -> int:
    """MiniGrid's default episode limit for the navix port of a MiniGrid level."""
    if "DoorKey" in env_id:
        return 10 * height * width
    if "FourRooms" in env_id:
        return 100
    if "KeyCorridor" in env_id:
        room = int(env_id.split("S")[1].split("R")[0])
        return 30 * room * room
    return 4 * height * width


def env_ids() -> list[str]:
    """All ids ``make`` accepts: the BabyAI levels, then navix's registry."""
    import navix as nx

    return list(BABYAI_LEVELS) + sorted(nx.registry())


def make(env_id: str, **overrides):
    """Return a navix ``Environment`` for ``env_id``.

    BabyAI ids accept ``room_size``, ``max_steps``, ``num_dists``, ``gamma`` and ``num_actions``
    (7: MiniGrid's actions; 6: BabyAI-Text / Lamorel's, without ``done``) overrides. Navix
    ids accept what ``navix.make`` does; their ``max_steps`` defaults to MiniGrid's limit for the
    level rather than navix's flat 100. ``gymnax:<id>`` (e.g. ``gymnax:CartPole-v1``) wraps a
    gymnax environment with the same contract (see ``gymnax_adapter``).
    """
    if env_id in BABYAI_LEVELS:
        from .babyai import make_goto

        bad = sorted(set(overrides) - set(_BABYAI_OVERRIDES))
        if bad:
            raise ValueError(f"unknown override(s) {bad} for {env_id}; allowed: {list(_BABYAI_OVERRIDES)}")
        kwargs = dict(BABYAI_LEVELS[env_id])
        kwargs.update(overrides)
        if int(kwargs.get("num_actions", 7)) not in (6, 7):
            raise ValueError(f"num_actions={kwargs['num_actions']} for {env_id}; allowed: 7 (MiniGrid) or 6 (Lamorel, no 'done')")
        if int(kwargs["room_size"]) < 4:
            raise ValueError(f"room_size={kwargs['room_size']} is too small; BabyAI rooms need room_size >= 4")
        return make_goto(**kwargs)
    import navix as nx

    if env_id.startswith("gymnax:"):
        from .gymnax_adapter import from_gymnax

        import gymnax

        name = env_id[len("gymnax:") :]
        if name not in gymnax.registered_envs:
            raise ValueError(f"unknown gymnax id {name!r}; known: {', '.join(gymnax.registered_envs)}")
        return from_gymnax(name, **overrides)
    if env_id not in nx.registry():
        raise ValueError(f"unknown env id {env_id!r}; known ids: {', '.join(env_ids())} (or gymnax:<id>)")
    if "max_steps" not in overrides:
        probe = nx.make(env_id, **overrides)
        overrides = dict(overrides, max_steps=_navix_max_steps(env_id, probe.height, probe.width))
    try:
        return nx.make(env_id, **overrides)
    except TypeError as err:
        raise ValueError(f"bad override for {env_id}: {err}") from None
