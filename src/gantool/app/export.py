"""`gantool export`: a trained generator as a file that runs without gantool.

The exported module is G (its EMA when the run kept one) followed by the family's own
conversion to the data's units (`Family.values`, the one `gantool sample --out x.npy` uses):
it takes latents (B, latent_dim), and a conditional generator's class indices (B,) int64 as a
second input, and returns the samples as the data holds them: the Gaussian's and 1-D
mixtures' values (B,), a mixture's points or the user's vectors (B, F) (de-standardised when
the run standardised them), and images (B, C, H, W) in [0, 1]. The batch dimension is dynamic.

Both formats come from the same `torch.export.export` of that module on the CPU: `.pt2` is that
ExportedProgram as `torch.export.save` writes it, and `.onnx` is the same program translated
by torch's ONNX exporter (its default, torch.export-based one, which needs the onnxscript
package; the TorchScript exporter it replaced is deprecated). Both are made in memory and then
written with the one atomic writer, with a metadata record beside them (FILE.json, also
inside the file: ONNX metadata_props["gantool"], the .pt2's extra file "gantool.json").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gantool
from gantool.app.sample import check_not_owned, check_out
from gantool.core.console import console
from gantool.core.errors import ConfigError, GantoolError, first_line
from gantool.core.files import write_file
from gantool.datasets.registry import family
from gantool.nn.mlp import with_classes
from gantool.training.trained import Trained, load_generator

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}  # --format: the extension --out must end in
METADATA_KEY = "gantool"  # ONNX metadata_props key of the record
PT2_METADATA = "gantool.json"  # the .pt2's extra file holding the record
EXAMPLE_BATCH = 2  # the traced batch; 0 and 1 would be specialised, not kept dynamic
LATENT = {  # how sample_latent draws each noise, for whoever draws the latents outside gantool
    "normal": "standard normal N(0, 1), each coordinate independent",
    "uniform": "uniform on [0, 1), each coordinate independent",
}


class Exported(nn.Module):
    """G and the family's conversion to the data's units, as one module: latents (B, D) and,
    for a conditional G, classes (B,) int64 -> samples in the data's units (see the module
    docstring for their shapes)."""

    def __init__(self, trained: Trained):
        super().__init__()
        cfg = trained.config
        # No gradients: the file's users call it for samples (ep.module()(z) gives plain
        # tensors, with no .detach() needed before .numpy()).
        self.generator = trained.generator.requires_grad_(False)
        self.kind = family(cfg.dataset)
        self.dataset = cfg.dataset
        shape = tuple(self.kind.sample_shape(cfg.dataset))
        # Images come out (B, C, H, W) whatever shape the family's values give (MNIST's
        # files hold (B, 28, 28)), so every image set exports alike.
        self.image_shape = shape if len(shape) == 3 else None

    def forward(self, latent: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        z = latent if classes is None else with_classes(latent, classes)  # G's (B, D[+1])
        values = self.kind.values(self.generator(z), self.dataset)
        if self.image_shape is not None:
            values = values.reshape(-1, *self.image_shape)  # (B, C, H, W) in [0, 1]
        return values.float()


def export_generator(path: str | Path, fmt: str, out: Path) -> tuple[Trained, dict[str, Any]]:
    """Write the generator of `path` (a checkpoint file, or a run folder's newest checkpoint
    that loads) as `out` in format `fmt` ("onnx" or "pt2"), and its metadata record as
    OUT.json; return the generator and the record. Everything that can refuse does so before
    the first write, and a failed write leaves neither file."""
    check_export_out(fmt, out)
    if fmt == "onnx":
        check_onnx_installed()
    trained = load_generator(path, "cpu")  # the file runs anywhere: traced on the CPU
    check_not_owned(out, trained)
    check_not_owned(metadata_path(out), trained)
    module = Exported(trained).eval()
    inputs = example_inputs(trained)
    program = traced(module, inputs)
    record = metadata(trained, fmt, module, inputs)
    text = json.dumps(record, indent=2) + "\n"
    data = onnx_bytes(program, inputs, text) if fmt == "onnx" else pt2_bytes(program, text)
    write_both(out, data, text.encode())
    return trained, record


def metadata_path(out: Path) -> Path:
    """The record beside an exported file: FILE.json (generator.onnx.json)."""
    return out.with_name(out.name + ".json")


def check_export_out(fmt: str, out: Path) -> None:
    """--format and --out before anything is loaded: a known format, a file name with its
    extension, writable, and no folder where the record goes."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    suffix = FORMATS[fmt]
    check_out(out, (suffix,), f"{suffix} for --format {fmt}", f"generator{suffix}")
    if metadata_path(out).is_dir():
        raise ConfigError(f"--out {out}: {metadata_path(out)}, where its record goes, is a folder")


def check_onnx_installed() -> None:
    """The packages torch's ONNX exporter needs, or one line saying how to install them."""
    try:
        import onnx  # noqa: F401  (optional: only `--format onnx` needs them)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise GantoolError(
            f"--format onnx needs the onnx and onnxscript packages ({first_line(e)}): "
            "pip install 'gantool[export]'"
        ) from e


def example_inputs(trained: Trained) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: latents (B, latent_dim), and classes (B,) for a conditional G."""
    model = trained.config.model
    latent = torch.zeros(EXAMPLE_BATCH, model.latent_dim)
    if not model.conditional:
        return (latent,)
    return latent, torch.zeros(EXAMPLE_BATCH, dtype=torch.int64)


def traced(module: Exported, inputs: tuple[torch.Tensor, ...]):
    """The module as a torch.export ExportedProgram whose batch dimension is dynamic."""
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in inputs)
    try:
        with torch.no_grad():
            return torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch.export's errors are long; the first line says which op
        raise GantoolError(f"torch.export could not trace this generator: {first_line(e)}") from e


def metadata(
    trained: Trained, fmt: str, module: Exported, inputs: tuple[torch.Tensor, ...]
) -> dict[str, Any]:
    """The record that tells a user outside gantool how to call the file: the inputs (how to
    draw the latents), the output's shape and units, the classes, and where it came from."""
    cfg = trained.config
    model, kind = cfg.model, family(cfg.dataset)
    with torch.no_grad():
        out_shape = list(module(*inputs).shape[1:])
    record: dict[str, Any] = {
        "format": fmt,
        "gantool_version": gantool.__version__,
        "run": str(trained.run_dir) if trained.run_dir else None,
        "checkpoint": os.path.abspath(trained.checkpoint),
        "step": trained.step,
        "dataset": kind.name,
        "ema": cfg.trainer.ema_decay > 0,  # the EMA generator's weights (trainer.ema_decay)
        "inputs": [
            {
                "name": "latent",
                "shape": ["batch", model.latent_dim],
                "dtype": "float32",
                "distribution": model.noise,
                "draw": LATENT[model.noise],
            }
        ],
        "output": {
            "name": "samples",
            "shape": ["batch", *out_shape],
            "dtype": "float32",
            "units": units(kind, cfg.dataset, module.image_shape is not None),
        },
        "latent_dim": model.latent_dim,
        "noise": model.noise,
        "conditional": bool(model.conditional),
        "classes": None,
    }
    if model.conditional:
        names = list(kind.names_of_classes(cfg.dataset)) or [
            str(i) for i in range(model.num_classes)
        ]
        record["classes"] = names[: model.num_classes]
        record["inputs"].append(
            {
                "name": "classes",
                "shape": ["batch"],
                "dtype": "int64",
                "range": [0, model.num_classes - 1],
                "draw": "class indices, in the order of `classes`",
            }
        )
    return record


def units(kind, ds, images: bool) -> str:
    """What the output's numbers are, in words."""
    if images:
        return "pixels in [0, 1], channels first"
    if getattr(ds, "standardize", False):
        return "the data's units (de-standardised with the run's recorded means and stds)"
    return "the data's units"


def onnx_bytes(program, inputs: tuple[torch.Tensor, ...], record: str) -> bytes:
    """The ExportedProgram translated to ONNX (weights inside the file), with the record as
    metadata_props["gantool"]. The exporter's progress lines and warnings are kept quiet:
    the command says in one line what it wrote."""
    names = ["latent", "classes"][: len(inputs)]
    try:
        with quiet():
            onnx_program = torch.onnx.export(
                program,
                inputs,
                input_names=names,
                output_names=["samples"],
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter's errors are long; the first line names the op
        raise GantoolError(f"ONNX export failed: {first_line(e)}") from e
    proto = onnx_program.model_proto
    name_batch_dimension(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, record
    return proto.SerializeToString()


def name_batch_dimension(graph) -> None:
    """The exporter names the dynamic batch dimension after its symbol (`s81`); call it
    "batch" in the graph's inputs, outputs and shapes, as the record does."""
    values = [*graph.input, *graph.output, *graph.value_info]
    symbols = {d.dim_param for v in graph.input for d in v.type.tensor_type.shape.dim}
    symbols.discard("")
    if len(symbols) != 1:  # one dynamic dimension is all there is; anything else: leave it
        return
    (symbol,) = symbols
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def pt2_bytes(program, record: str) -> bytes:
    """The ExportedProgram as torch.export.save writes it, the record as its extra file
    gantool.json (torch.export.load(f, extra_files={"gantool.json": ""}) reads it back)."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_METADATA: record})
    return buffer.getvalue()


@contextlib.contextmanager
def quiet():
    """torch.onnx's progress prints and warnings, kept off the user's terminal."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def write_both(out: Path, data: bytes, record: bytes) -> None:
    """The exported file, then its record; if the record cannot be written, the file goes too,
    so that a failed command leaves neither."""
    write_file(out, data)
    try:
        write_file(metadata_path(out), record)
    except GantoolError:
        out.unlink(missing_ok=True)
        raise


def command(path: str, fmt: str, out: Path) -> None:
    """`gantool export`: export, and say in one line what was written."""
    trained, record = export_generator(path, fmt, out)
    shape = "(" + ", ".join(str(d) for d in record["output"]["shape"]) + ")"
    console.print(
        f"Wrote {out} and {metadata_path(out).name} (from {trained.checkpoint}, step "
        f"{trained.step}; latents {record['noise']} ({record['latent_dim']}), samples {shape})",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
