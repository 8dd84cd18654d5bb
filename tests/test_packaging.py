"""Worker packaging: the sdist and wheel Dataflow workers install hold what they run, and it runs.

``--setup_file ./setup.py`` (and the Flex Template image) install ticketflow from these artifacts,
not from the repository, so a package or data file missing from them breaks only on the workers.
They carry the driver and worker code only (``pipeline``, ``transforms`` and the ``simulator`` that
``--simulate`` starts); ``benchmarks`` and ``tools`` (the ticket generator) run from the repository
and must stay out of what every worker installs. The wheel is installed with ``--no-deps`` into a
fresh venv (no ``--system-site-packages``) that sees the dependencies through a ``.pth`` line naming
this venv's site-packages: a directory added that way is a plain path entry, so its ``.pth`` files
(among them the editable install of ticketflow) are NOT processed and our packages can only come
from the wheel. Then ``python -m pipeline --help`` and ``python -m simulator --help`` run from a
directory outside the repository, where ``benchmarks`` and ``tools`` cannot be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "transforms", "simulator")
NOT_PACKAGED = ("benchmarks", "tools")  # repository-only: run from its root


def _sources(package: str) -> set:
    return {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")
            if "__pycache__" not in p.parts}


def _data_files(package: str) -> set:
    return {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.json")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="pip install build (test extra)")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this venv's setuptools and wheel instead of downloading them.
    proc = subprocess.run(check=False, args=[sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
                           "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_wheel_holds_every_module_and_data_file(dist):
    (wheel,) = dist.glob("ticketflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        missing = (_sources(package) | _data_files(package)) - names
        assert not missing, f"{wheel.name} lacks {sorted(missing)}"
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(
        ".dist-info")}
    shipped = tops & set(NOT_PACKAGED)
    assert not shipped, f"{wheel.name} carries repository-only packages {sorted(shipped)}"
    assert tops == set(PACKAGES), f"unexpected top-level entries in the wheel: {tops}"


def test_sdist_holds_setup_py_and_every_module(dist):
    (sdist,) = dist.glob("ticketflow-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {"/".join(n.split("/")[1:]) for n in archive.getnames()}
    assert "setup.py" in names
    for package in PACKAGES:
        missing = (_sources(package) | _data_files(package)) - names
        assert not missing, f"{sdist.name} lacks {sorted(missing)}"


def test_wheel_runs_from_a_clean_venv_outside_the_repo(dist, tmp_path):
    (wheel,) = dist.glob("ticketflow-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    ours = sysconfig.get_paths()["purelib"]
    (site / "deps_from_test_venv.pth").write_text(ours + "\n", encoding="utf-8")
    pip = subprocess.run(check=False, args=[sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                          "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    code = ("import pipeline, transforms, simulator; "
            "print('\\n'.join(m.__file__ for m in (pipeline, transforms, simulator)))")
    where = subprocess.run(
        check=False, args=[str(python), "-c", code], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    for path in where.stdout.split():
        assert path.startswith(str(site)), f"imported {path}, not from the wheel"
    for name in NOT_PACKAGED:
        absent = subprocess.run(check=False, args=[str(python), "-c", f"import {name}"], cwd=run_dir,
                                env=env, capture_output=True, text=True, timeout=120)
        assert absent.returncode != 0 and "ModuleNotFoundError" in absent.stderr, \
            f"{name} is importable outside the repository: {absent.stderr[-500:]}"
    sim = subprocess.run(check=False, args=[str(python), "-m", "simulator", "--help"], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0 and "--rpm" in sim.stdout, sim.stderr[-3000:]
    helped = subprocess.run(check=False, args=[str(python), "-m", "pipeline", "--help"], cwd=run_dir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage:"), helped.stderr[-3000:]

    # A real (small) job from the wheel: proves the modules, data files and entry points work.
    lines = (REPO / "examples" / "tickets.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    (run_dir / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = subprocess.run(check=False, args=[str(python), "-m", "pipeline", "--input", "tickets.jsonl",
                          "--output", "out", "--simulate"], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=240)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "balanced" in job.stdout
    assert (run_dir / "out" / "summary.json").exists()


def test_pipeline_help_lists_our_flags(tmp_path):
    proc = subprocess.run(check=False, args=[sys.executable, "-m", "pipeline", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--input" in proc.stdout and "--requests_per_minute" in proc.stdout


def test_top_level_names_do_not_collide_with_installed_modules():
    # Proxy for the Beam SDK image: this venv holds apache-beam[gcp] and its dependencies.
    site = Path(sysconfig.get_paths()["purelib"])
    taken = {}
    for dist_info in site.glob("*.dist-info"):
        if dist_info.name.lower().startswith("ticketflow-"):
            continue
        top_level = dist_info / "top_level.txt"
        names = (top_level.read_text().split() if top_level.exists() else [])
        record = dist_info / "RECORD"
        if record.exists():
            names += [line.split("/", 1)[0].split(",", 1)[0].removesuffix(".py")
                      for line in record.read_text().splitlines()]
        for name in names:
            taken.setdefault(name, dist_info.name)
    for entry in site.iterdir():
        name = entry.name.removesuffix(".py")
        if not entry.name.endswith((".dist-info", ".pth")) and not name.startswith("__editable__"):
            taken.setdefault(name, "(file in site-packages)")
    clashes = {p: taken[p] for p in PACKAGES if p in taken}
    assert not clashes, f"top-level names already used by installed distributions: {clashes}"
    assert "apache_beam" in taken and "google" in taken  # the scan did see the SDK's modules
