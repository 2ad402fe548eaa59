import subprocess
import sys


def test_import_is_light():
    """`import bidijax` loads neither JAX, navix, torch nor transformers."""
    code = (
        "import sys, bidijax; "
        "print(','.join(m for m in ('jax', 'navix', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_submodule_and_version():
    import bidijax

    assert bidijax.__version__
    assert hasattr(bidijax.envs, "make")


def test_cli_rejects_unknown_env(capsys):
    from bidijax.cli import main

    assert main(["demo", "--env", "BabyAI-Nope-v0", "--num-envs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "BabyAI-Nope-v0" in err and "BabyAI-GoToRedBallNoDists-v0" in err
