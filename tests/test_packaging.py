"""An installed wheel carries the configs, and the entry point finds them there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO, cli_env


def test_wheel_ships_configs_and_cli_uses_them(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("pipeline/conf/") and n.endswith(".yaml")}
    source = {f"pipeline/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == source
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    env = cli_env(PYTHONPATH=str(target))
    found = subprocess.run([sys.executable, "-c", "from pipeline.config import config_dir; print(config_dir())"], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == target / "pipeline" / "conf"
    shown = subprocess.run([sys.executable, "-m", "pipeline", "--cfg", "job", "data=fashion_mnist"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert shown.returncode == 0 and "name: fashion_mnist" in shown.stdout, shown.stderr[-2000:]


def test_make_demo_runs_each_modality_on_its_offline_data() -> None:
    for modality, data, prep in (("image", "mnist", None), ("audio", "spoken_digits", "spoken_digits_espeak"), ("text", "fortunes", "fortunes")):
        planned = subprocess.run(["make", "-n", "demo", f"MODALITY={modality}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        for stage in ("dit", "sample", "eval"):
            assert f"-m pipeline stage={stage} data={data}" in planned, planned
        assert prep is None or prep in planned  # audio and text make their offline data first
    refused = subprocess.run(["make", "--no-print-directory", "demo", "MODALITY=video"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "error: MODALITY=video: use image, audio or text" in refused.stderr
