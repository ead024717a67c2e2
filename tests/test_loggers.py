"""logger=mlflow and logger=wandb against the real packages, read back from what they wrote;
each skips where its extra is not installed. logger=tensorboard is tested in test_train.py."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAST, compose_config, run_main
from gantool.app.loggers import experiment_name, opener, outputs_root, run_name, wandb_mode
from gantool.config.compose import flatten, to_dict
from gantool.core.files import write_json
from gantool.training.run_folder import RunFolder


def png(color: tuple[int, int, int]) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


def log_a_run(run_dir: Path, cfg) -> RunFolder:
    """Log two rows and pictures, summary.json and the evaluation through cfg's logger, as the
    training loop and finish() do, in their order; no training (it would cost seconds)."""
    folder = RunFolder(run_dir)
    run_dir.mkdir(parents=True)
    folder.start_logs(0, opener(cfg)(run_dir, 0))
    for step in (2, 4):
        folder.log_row(step, {"step": step, "train/d_loss": step / 10, "note": "text"})
        folder.log_picture(step, png((step * 40, 0, 0)))
    write_json(folder.summary, {"status": "completed", "step": 4, "eval": {"eval/w1": 0.25}})
    folder.close_logs(4, {"eval/w1": 0.25})
    return folder


def test_where_mlflow_and_wandb_put_a_run(tmp_path: Path) -> None:
    single = tmp_path / "outputs" / "2026-12-05" / "10-00-00-42"
    sweep = tmp_path / "outputs" / "multirun" / "2026-12-05" / "10-00-00-43"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")  # what Hydra writes when a sweep starts
    assert outputs_root(single) == outputs_root(sweep / "3") == tmp_path / "outputs"
    assert experiment_name(single) == "gantool"
    assert experiment_name(sweep / "3") == "multirun/2026-12-05/10-00-00-43"
    assert run_name(single) == "2026-12-05/10-00-00-42"
    # Outside an `outputs` folder: beside the run folder, or beside the sweep folder.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "multirun.yaml").write_text("{}")
    assert outputs_root(tmp_path / "run") == tmp_path
    assert outputs_root(tmp_path / "mine" / "0") == tmp_path
    assert experiment_name(tmp_path / "mine" / "0") == "mine"


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "offline"),
        ({"WANDB_API_KEY": "k"}, "online"),
        ({"WANDB_MODE": "disabled"}, None),  # W&B reads it itself
        ({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}, None),
    ],
)
def test_wandb_is_offline_unless_the_environment_says_otherwise(monkeypatch, env, mode) -> None:
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert wandb_mode() == mode


def test_mlflow_records_a_run_and_its_resume(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="logger=mlflow needs pip install 'gantool[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset below")  # undone after the test
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # gantool sets it for its own store
    run_dir = tmp_path / "outputs" / "2026-12-05" / "10-00-00-42"
    cfg = compose_config([*FAST, "logger=mlflow"])
    folder = log_a_run(run_dir, cfg)

    client = MlflowClient((tmp_path / "outputs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("gantool")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "2026-12-05/10-00-00-42"
    expected = {k: str(v) for k, v in flatten(to_dict(cfg)).items()}
    assert run.data.params == expected and run.data.params["logger.name"] == "mlflow"
    history = client.get_metric_history(run.info.run_id, "train/d_loss")
    assert [(m.step, m.value) for m in history] == [(2, 0.2), (4, 0.4)]
    [w1] = client.get_metric_history(run.info.run_id, "eval/w1")
    assert (w1.step, w1.value) == (4, 0.25)
    assert "note" not in run.data.metrics and "step" not in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"samples", "summary.json"}
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"samples/step_0000002.png", "samples/step_0000004.png"}
    got = Path(client.download_artifacts(run.info.run_id, "summary.json")).read_bytes()
    assert got == folder.summary.read_bytes()

    # A resume continues the same MLflow run; what it overrode is kept as a tag.
    longer = compose_config([*FAST, "logger=mlflow", "trainer.steps=8"])
    [log] = opener(longer)(run_dir, 6)
    log.scalars(8, {"step": 8, "train/d_loss": 0.5, "note": "not a number"})
    log.close()
    [again] = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["resumed.trainer.steps"] == "8"
    assert client.get_metric_history(run.info.run_id, "train/d_loss")[-1].step == 8

    # MLFLOW_TRACKING_URI, where the user's environment sets it, is where runs go.
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    [log] = opener(cfg)(tmp_path / "outputs" / "2026-12-05" / "11-00-00-43", 0)
    log.close()
    [other] = MlflowClient(elsewhere.as_uri()).search_runs(
        [MlflowClient(elsewhere.as_uri()).get_experiment_by_name("gantool").experiment_id]
    )
    assert other.info.run_name == "2026-12-05/11-00-00-43"
    assert len(client.search_runs([experiment.experiment_id])) == 1


def wandb_records(path: Path) -> list:
    """The records of W&B's `.wandb` file, decoded with W&B's own protobuf: a 7-byte header,
    then 32 KiB blocks of chunks, each a 7-byte header (CRC-32C, length, type: 1 whole record,
    2 first, 3 middle, 4 last piece of one) and its bytes; a block's last 6 bytes or fewer
    are padding."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pieces, at = [], b"", 7
    while at + 7 <= len(data):
        if 32768 - at % 32768 < 7:  # padding at a block's end
            at += 32768 - at % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[at : at + 7])
        pieces += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def keyed(item) -> str:
    """A W&B history or summary item's key: `key`, or its `nested_key` path joined by /
    (a metric `train/d_loss` is the path ["train/d_loss"], an image's path ["samples", "path"])."""
    return item.key or "/".join(item.nested_key)


def test_wandb_records_a_run_offline(tmp_path: Path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb", reason="logger=wandb needs pip install 'gantool[wandb]'")
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # never ~
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    run_dir = tmp_path / "outputs" / "2026-12-05" / "10-00-00-42"
    cfg = compose_config([*FAST, "logger=wandb"])
    log_a_run(run_dir, cfg)
    wandb.teardown()  # W&B's process has written everything (at exit, as `gantool train` ends)

    [offline] = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(next(offline.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    [run] = [r.run for r, kind in zip(records, kinds, strict=True) if kind == "run"]
    assert run.project == "gantool" and run.display_name == "2026-12-05/10-00-00-42"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    expected = {k: str(v) for k, v in flatten(to_dict(cfg)).items()}
    assert {k: config[k] for k in expected} == expected
    history = {
        r.history.step.num: {keyed(i): json.loads(i.value_json) for i in r.history.item}
        for r, kind in zip(records, kinds, strict=True)
        if kind == "history"
    }
    assert {step: row["train/d_loss"] for step, row in history.items()} == {2: 0.2, 4: 0.4}
    assert [row["samples/path"].split("_")[1] for row in history.values()] == ["2", "4"]
    assert history[4]["eval/w1"] == 0.25 and "eval/w1" not in history[2]
    assert not any("note" in row for row in history.values())
    pictures = [offline / "files" / row["samples/path"] for row in history.values()]
    assert [Image.open(p).getpixel((0, 0)) for p in pictures] == [(80, 0, 0), (160, 0, 0)]
    summary = {
        keyed(i): json.loads(i.value_json)
        for r, kind in zip(records, kinds, strict=True)
        if kind == "summary"
        for i in r.summary.update
    }
    assert summary["gantool"]["eval"] == {"eval/w1": 0.25}
    assert not any(p.name == "summary.json" for p in (run_dir / "wandb").rglob("*"))


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_extra_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setitem(sys.modules, name, None)  # `import NAME` fails, as when not installed
    run_dir = tmp_path / "run"
    code = run_main("train", *FAST, f"logger={name}", f"hydra.run.dir={run_dir}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"logger={name}" in err and f"pip install 'gantool[{name}]'" in err
    assert not tmp_path.joinpath("run").exists() and list(tmp_path.iterdir()) == []
    # A sweep is refused before it starts too.
    code = run_main("train", "-m", *FAST, f"logger=none,{name}", f"hydra.sweep.dir={run_dir}")
    assert code == 2 and f"pip install 'gantool[{name}]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_report_passes_over_the_mlflow_store(tmp_path: Path) -> None:
    from gantool.app.report import find_job_dirs

    outputs = tmp_path / "outputs"
    for folder in (outputs / "run", outputs / "mlruns" / "1" / "0a1b" / "artifacts"):
        folder.mkdir(parents=True)
        write_json(folder / "summary.json", {"status": "completed"})
    assert find_job_dirs(outputs) == [outputs / "run"]
