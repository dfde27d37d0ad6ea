"""The package as a user installs it: a wheel, in a virtual environment of its own, run from a
folder outside any checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import study

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed alone in a new venv. Its dependencies are
    this environment's (a .pth file adds its site-packages after the venv's own), so that the
    test costs no download of torch; the package itself is the wheel's: this environment's
    editable install is not processed there."""
    base = tmp_path_factory.mktemp("package")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", ROOT]
    )
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("estimation_study-*.whl"))
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    done = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel])
    assert done.returncode == 0, done.stderr
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    away = base / "elsewhere"
    away.mkdir()
    return wheel, venv, away


def test_the_installed_wheel_runs_the_exercises_and_a_spec_outside_any_checkout(installed):
    wheel, venv, away = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"study/exercises/specs/ex{n}_{s}.toml" for n, s in ((1, "reduction"), (7, "weight_decay"))} <= set(names)
    assert "study/py.typed" in names and wheel.name.startswith(f"estimation_study-{study.__version__}-")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)
    cli = venv / "bin" / "study"
    where = _run([venv / "bin" / "python", "-c", "import study; print(study.__file__)"], cwd=away, env=env)
    assert where.stdout.strip().startswith(str(venv)), where  # the wheel's copy, not this checkout's
    version = _run([cli, "--version"], cwd=away, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"study (estimation-study) {study.__version__}"

    quick = _run([cli, "exercises", "--quick", "--out-dir", away], cwd=away, env=env)
    assert quick.returncode == 0, quick.stderr
    figures = sorted(p.name for p in (away / "figures").glob("*.png"))
    assert figures == sorted(
        [
            "ex1_reduction.png",
            "ex2_huber_losses.png",
            "ex2_huber.png",
            "ex3_gradients.png",
            "ex4_lr_epochs.png",
            "ex5_data_size.png",
            "ex6_reaching_the_limit.png",
            "ex7_weight_decay.png",
        ]
    )

    spec = away / "mine.toml"
    spec.write_text((ROOT / "experiments" / "quick.toml").read_text())
    ran = _run([cli, "run", spec, "--out", away / "mine.parquet", "--quiet"], cwd=away, env=env)
    assert ran.returncode == 0, ran.stderr
    meta = json.loads((away / "mine.meta.json").read_text())
    # Provenance: the package's version; no git commit, for the package is in no checkout of its own.
    assert meta["versions"]["study"] == study.__version__ and meta["git_commit"] is None

    before = sorted(p.name for p in away.iterdir())
    refused = _run([cli, "run", away / "nope.toml"], cwd=away, env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert sorted(p.name for p in away.iterdir()) == before  # nothing written on bad input


def test_provenance_names_this_checkouts_commit():
    from study.runner import _git_commit

    head = _run(["git", "rev-parse", "HEAD"], cwd=ROOT)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert _git_commit().split("-")[0] == head.stdout.strip()


#: The modules that read, summarize and draw tables, and the closed forms: none needs torch, so a
#: table is analysed on a machine (or in a notebook) that never trained it, and loads in a blink.
WITHOUT_TORCH = (
    "study.theory",
    "study.schema",
    "study.selection",
    "study.summaries",
    "study.comparisons",
    "study.fits",
    "study.analysis",
    "study.plots",
    "study.errors",
    "study.exercises",
    "study.exercises.catalog",
)


def test_analysis_and_figures_import_no_torch():
    probe = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in WITHOUT_TORCH)
    probe += "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_public_api_is_what_study_exports_and_the_documented_sub_modules():
    """Every exported name resolves; a private module's ``__all__`` holds only names that
    ``study`` exports from it, so there is one answer to "what may I import"."""
    import importlib
    import pkgutil

    for name in study.__all__:
        assert getattr(study, name) is not None, name
    for module in study.PUBLIC_MODULES:
        public = importlib.import_module(f"study.{module}")
        assert public.__all__, module
        for name in public.__all__:
            assert getattr(public, name) is not None, f"study.{module}.{name}"
    exported = set(study.__all__)
    for info in pkgutil.iter_modules(study.__path__):
        if info.name in study.PUBLIC_MODULES or info.name in ("__main__", "cli"):
            continue
        module = importlib.import_module(f"study.{info.name}")
        assert hasattr(module, "__all__"), f"study.{info.name} lists no __all__"
        assert set(module.__all__) <= exported, f"study.{info.name} exports {set(module.__all__) - exported}"
        for name in module.__all__:
            assert getattr(study, name) is getattr(module, name), name
