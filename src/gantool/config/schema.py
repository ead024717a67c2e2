"""The typed schema of every config group but the dataset's (see datasets.py).

The YAML files under ``configs/`` hold values only; the dataclasses here give them types and
defaults, so a misspelt key or a wrong type fails when Hydra composes the config. Ranges and
choices are checked by checks.validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# Pointwise activations, usable after G's last layer too; maxout (hidden layers only) takes the
# largest of `pieces` linear units for each of its outputs.
POINTWISE = ("elu", "leaky_relu", "relu", "tanh", "sigmoid")
ACTIVATIONS = (*POINTWISE, "maxout")
OUT_ACTIVATIONS = ("none", *POINTWISE)
NOISES = ("uniform", "normal")
D_FEATURES = ("samples", "moments")
OPTIMIZERS = ("adam", "sgd")
G_LOSSES = ("non_saturating", "minimax")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
ARCHITECTURES = ("mlp", "dcgan")
AUGMENTS = ("none", "diffaugment")
AUGMENT_POLICIES = ("color", "translation", "cutout")  # DiffAugment's (gantool.nn.augment)
LOGGERS = ("none", "tensorboard", "mlflow", "wandb")


# --- model --------------------------------------------------------------------------------------
@dataclass
class GeneratorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    negative_slope: float = 0.2  # used by leaky_relu only
    pieces: int = 2  # used by maxout only: linear units per output
    out_activation: str = "tanh"
    bias: bool = True  # the hidden layers' Linear has a bias (the output layer always has one)
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1  # PyTorch convention: weight of the new batch statistics
    batch_norm_eps: float = 1e-5
    # False: Linear -> activation -> BatchNorm (the Keras MLP GAN); True: Linear -> BatchNorm ->
    # activation (DCGAN, PacGAN).
    batch_norm_before_activation: bool = False
    dropout: float = 0.0
    # > 0: every Linear weight is drawn from N(0, init_std²) and every bias is 0; 0: PyTorch's
    # default initialisation.
    init_std: float = 0.0
    # The first hidden block has neither BatchNorm nor dropout (PyTorch-GAN's cGAN, DCGAN).
    first_block_plain: bool = False
    # model.arch=dcgan only: the widths of G's transposed convolutions, widest first, one per
    # doubling of the image size; null: DCGAN's, 64 x 2^k (28 px: [128, 64]; 64 px:
    # [512, 256, 128, 64]). DCGAN uses batch_norm, and ignores the MLP keys above.
    channels: list[int] | None = None


@dataclass
class DiscriminatorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "leaky_relu"
    negative_slope: float = 0.2
    pieces: int = 2  # maxout only
    bias: bool = True
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1
    batch_norm_eps: float = 1e-5
    batch_norm_before_activation: bool = False
    dropout: float = 0.0
    init_std: float = 0.0
    first_block_plain: bool = False
    # "samples": D sees each sample; "moments": D sees the batch's mean, std, skewness and
    # excess kurtosis per feature, and gives one logit per batch (the 50-line experiment).
    features: str = "samples"
    # Divide each Linear's weight by its largest singular value (Miyato et al. 2018).
    spectral_norm: bool = False
    # PacGAN: D judges `pack` samples side by side (input pack x data_dim; hidden widths
    # unchanged). Each step then reads trainer.batch_size x pack real samples and G makes as
    # many, so D still sees trainer.batch_size packs of each. 1 is the plain D.
    pack: int = 1
    # model.arch=dcgan only: the widths of D's strided convolutions, narrowest first; null:
    # DCGAN's, 64 x 2^k (28 px: [64, 128]; 64 px: [64, 128, 256, 512]).
    channels: list[int] | None = None


@dataclass
class ModelConfig:
    # "mlp": G and D are MLPs on flattened samples (any dataset); "dcgan": convolutional nets
    # of Radford et al. (2016) for the image sets (gantool.nn.dcgan).
    arch: str = "mlp"
    latent_dim: int = 64
    noise: str = "normal"  # the distribution of G's input: normal N(0, 1) or uniform U[0, 1)
    g: GeneratorConfig = field(default_factory=GeneratorConfig)
    d: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # Class-conditional G and D (labelled datasets: the MNIST family, image folders with class
    # subfolders): each takes the class,
    # embedded in label_dim numbers and concatenated to its input (Mirza & Osindero's cGAN).
    conditional: bool = False
    num_classes: int | None = None  # conditional only: the classes G draws; null: the data's
    label_dim: int = 10  # conditional only: the size of each class's embedding


# --- optimizer ----------------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam only
    momentum: float = 0.0  # sgd only


@dataclass
class OptimizersConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)


# --- trainer, loss, device ----------------------------------------------------------------------
@dataclass
class TrainerConfig:
    # The run's length: `steps` when set, else `epochs` (finite datasets only).
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    d_steps: int = 1  # D updates per step, each on a fresh real batch
    g_steps: int = 1  # G updates per step
    # The first G update reuses the last D update's fakes, G's forward pass and all, instead of
    # drawing fresh noise: one G forward fewer per step. The reference presets keep it off.
    reuse_fake: bool = False
    # Each step updates G first, then D (PyTorch-GAN's order); with reuse_fake, D's first
    # update judges the fakes G's update made, before G moved.
    g_first: bool = False
    seed: int = 0
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 64  # size of the fixed noise batch behind every sample grid or histogram
    num_eval_samples: int = 100_000  # samples behind the end-of-run evaluation
    eval_at_end: bool = True  # evaluate the final generator into summary.json (`gantool eval`)
    # The evaluation number a run is judged by: returned to Hydra's sweepers, sorted on by
    # `gantool report`. One of the dataset's eval_keys; null: the dataset's own choice (its
    # schema's default_objective), filled in when the config is checked.
    objective: str | None = None
    # Keep an exponential moving average of G's weights (0 turns it off); sample images, the
    # end-of-run statistics and `gantool sample` then use it.
    ema_decay: float = 0.0
    # Capture the whole step as one CUDA graph and replay it (gantool.training.graph): "auto"
    # does so on a CUDA device when the setup allows it, true asks for it (and logs why not
    # when it cannot), false never. Typed Any: a YAML true/false stays a bool, "auto" a string.
    cuda_graph: Any = "auto"
    # Image sets: "diffaugment" augments real and generated images alike before D, in both
    # updates, differentiably (Zhao et al. 2020), from a generator of its own that
    # checkpoints keep; `augment_policy`: its transforms, any of color, translation, cutout.
    augment: str = "none"
    augment_policy: list[str] = field(default_factory=lambda: ["color", "translation", "cutout"])
    # Quality watched during training (gantool.training.watch, docs/quality.md). Every
    # eval_every steps (0: never; a multiple of log_every) the dataset's evaluation of
    # num_periodic_eval_samples samples, from noise of its own (no RNG of the run moves), joins
    # that step's metrics row; the best objective so far is kept as checkpoints/best.pt.
    eval_every: int = 0
    num_periodic_eval_samples: int = 10_000
    # Early stop: after `patience` evaluations in a row that improve the objective by no more
    # than min_delta (0: never stop early).
    patience: int = 0
    min_delta: float = 0.0
    # Rollback: when a loss is not finite or the dataset's collapse signal fires, go back to
    # checkpoints/best.pt (else the newest checkpoint), multiply both learning rates by
    # rollback_lr_factor and go on; at most max_rollbacks times (0: never).
    max_rollbacks: int = 0
    rollback_lr_factor: float = 0.5


@dataclass
class LossConfig:
    # The adversarial loss: a name in gantool.nn.losses.LOSSES (bce, hinge, lsgan, wgan_gp).
    name: str = "bce"
    # bce only. G's loss: "non_saturating" maximises log D(G(z)), "minimax" minimises
    # log(1 - D(G(z))) as in the original paper.
    g_loss: str = "non_saturating"
    # R1 penalty weight: D's loss gains r1_gamma / 2 * E[|grad_x D(x)|²] on real x; 0 is off.
    r1_gamma: float = 0.0
    # Lazy R1 (StyleGAN2): the penalty on every r1_every-th step only, weighted r1_every times.
    r1_every: int = 1
    # wgan_gp only: λ, the weight of the gradient penalty on real/fake interpolates.
    gp_lambda: float = 10.0


@dataclass
class DeviceConfig:
    name: str = "auto"
    # CPU threads for torch's intra-op work. 0 (auto): one thread for models under 100,000
    # parameters (the Gaussian's), whose ops are too small to share out; else torch's default.
    num_threads: int = 0
    # "bf16" runs the forward passes under bfloat16 autocast (meant for CUDA); "fp32" is plain.
    precision: str = "fp32"


@dataclass
class LoggerConfig:
    # metrics.jsonl is always written; "tensorboard" also writes RUN_DIR/tensorboard/: the
    # logged scalars and each sample picture as an image; "mlflow" and "wandb" log the same
    # and the config to MLflow or W&B (gantool.app.loggers).
    name: str = "none"


@dataclass
class EvalConfig:
    # FID, KID, precision and recall of image sets through torch-fidelity (gantool.nn.fidelity):
    # the path of its Inception weights file; null: torch-fidelity's cached copy when it is
    # there, else these four are skipped with a line saying how to provide the file. Nothing
    # is ever downloaded.
    inception_weights: str | None = None


@dataclass
class Config:
    dataset: Any = MISSING  # a schema of config/datasets.py, chosen by the `dataset` group
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizersConfig = field(default_factory=OptimizersConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def run_length(trainer: TrainerConfig, batches_per_epoch: int | None) -> int:
    """The run's length in steps: trainer.steps, else its epochs of the finite dataset (each
    step uses d_steps batches). Intervals longer than the run are fine: the last step always
    logs, samples and checkpoints."""
    if trainer.steps is not None:
        return trainer.steps
    return max(1, trainer.epochs * batches_per_epoch // trainer.d_steps)
