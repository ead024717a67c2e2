"""Sweeps through Hydra's launcher plugins: joblib (parallel processes) and submitit (SLURM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FAST, assert_sweep_with_a_failed_job, run_cli
from gantool.config.compose import config_dir, register_configs


@pytest.mark.slow  # ~20 s: each worker process imports torch again
def test_joblib_sweep_runs_jobs_in_parallel_processes_into_one_sweep_folder(tmp_path: Path) -> None:
    done = run_cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "dataset.std=1.25,-1,2",
        *FAST,
        cwd=tmp_path,
        timeout=240,
    )
    assert "Joblib.Parallel(n_jobs=2" in done.stdout
    # The default sweep folder: every worker process must resolve it as the parent did.
    [sweep] = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "2", "multirun.yaml"]
    # The failure comes back from its worker process as it does from the serial launcher.
    assert_sweep_with_a_failed_job(sweep, done)


def test_submitit_slurm_launcher_composes_with_its_resource_keys() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install '.[slurm]'")
    from hydra import compose, initialize_config_dir

    register_configs()
    overrides = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=4",
        "hydra.launcher.mem_gb=16",
    ]
    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.mem_gb) == ("gpu", 240, 16)
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.cpus_per_task) == (1, 1, 4)
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # inside the sweep
