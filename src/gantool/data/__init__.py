"""Dataset families. Each module here owns one family's behaviour; its config schema (with its
value checks, `eval_keys`, `endless` and `targets()`) is a dataclass in config.py, registered
in config.DATASET_SCHEMAS. Nothing outside a family's own module asks which dataset a run
uses: code calls `family(cfg.dataset)` and uses what the family class provides:

    name                     the dataset group option (`dataset=NAME`)
    data_dim(cfg)            the size of one flattened sample: what G outputs and D reads
    stream(cfg, batch_size, seed, device)
                             the training batches: an object with data_dim, batch_size,
                             batches_per_epoch (None when endless), next_batch() -> a
                             (batch_size, data_dim) tensor on `device` in the model's range,
                             state_dict() / load_state_dict() (exact resume). Families
                             with class labels (their schema's num_classes > 0) take
                             labels=True: each row then ends in its class, for a
                             conditional model (models.mlp.with_classes)
    check_available(cfg)     before a run starts: refuse data that cannot be had (one line)
    label, default_num       for `gantool sample`: a display name, samples without --num
    picture_formats, raw_formats, max_num(fmt)
                             what `--out` may end in, and the most samples per format
    picture(samples, cfg, fmt, title) -> bytes
                             samples (N, data_dim) drawn as a picture file (".png", ...)
    values(samples, cfg)     samples as a .npy/.pt/.csv file holds them (in the data's units)
    columns(cfg)             families with .csv among raw_formats: the CSV header's names
    plots(rows, cfg, folder) end-of-run pictures beyond the loss curves (rows: metrics.jsonl)
    evaluate(cfg, generator, device, num, seed, recipe) -> dict
                             `eval/*` numbers of `num` samples (cfg: the whole Config;
                             eval/num_samples always, and every key of the schema's eval_keys)
    for_evaluation(cfg, started_in, data_root) -> cfg
                             the dataset config as `gantool eval` reads it later, perhaps
                             from another folder (`started_in`: where the run was started)
"""

from __future__ import annotations

from gantool.data import gaussian, mixture, mnist, vectors

FAMILIES = {
    "gaussian": gaussian.Gaussian,
    "mnist": mnist.Mnist,
    "fashion_mnist": mnist.FashionMnist,
    "kmnist": mnist.Kmnist,
    "mixture": mixture.Mixture,
    "vectors": vectors.Vectors,
}


def family(cfg):
    """The family of a dataset config (any schema in config.DATASET_SCHEMAS)."""
    return FAMILIES[cfg.name]


def build_data(cfg, batch_size: int, seed: int, device, labels: bool = False):
    """The training stream of a dataset config; labelled rows for a conditional model."""
    kind = family(cfg)
    if labels:
        return kind.stream(cfg, batch_size, seed, device, labels=True)
    return kind.stream(cfg, batch_size, seed, device)


def training_stream(cfg, device, seed: int | None = None):
    """The stream a run of the whole config `cfg` trains on: trainer.batch_size packs of
    model.d.pack samples per batch, labelled when the model is conditional; the run's seed
    unless `seed` is given."""
    from gantool.errors import GantoolError

    t, pack = cfg.trainer, cfg.model.d.pack
    seed = t.seed if seed is None else seed
    try:
        return build_data(cfg.dataset, t.batch_size * pack, seed, device, cfg.model.conditional)
    except GantoolError as e:  # a batch too large for the data: say where its size came from
        if pack == 1:
            raise
        raise GantoolError(
            f"{e} (with model.d.pack={pack}, a batch holds trainer.batch_size={t.batch_size} "
            f"x {pack} samples)"
        ) from e


def data_dim(cfg) -> int:
    """The size of one flattened sample: what G outputs and D reads."""
    return family(cfg).data_dim(cfg)


def check_available(cfg) -> None:
    """Before a run starts, refuse data that cannot be had (files absent, no download)."""
    family(cfg).check_available(cfg)


__all__ = ["FAMILIES", "build_data", "check_available", "data_dim", "family", "training_stream"]
