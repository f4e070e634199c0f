"""The classifier's training configuration: hyperparameters, the command that reproduces a run, checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml.data.preprocessing import PreprocessConfig


@dataclass
class TrainConfig:
    """Hyperparameters; written next to the model as ``train_config.json``."""

    name: str = "ich-compact"
    version: str = "1.0.0"
    datasets: list[str] = field(default_factory=lambda: ["head_ct", "ct_ich"])
    backbone: str = "compact"
    width: int = 32
    dropout: float = 0.3
    image_size: int = 224
    clahe: bool = False
    batch_size: int = 32
    epochs: int = 60
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12
    time_budget_minutes: float = 40.0
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    target_sensitivity: float = 0.95
    seed: int = 42
    max_samples: int | None = None
    bootstrap_resamples: int = 1000
    init_from: str | None = None
    # Weigh every (dataset, label) cell of the training split equally, so the small head_ct
    # collection is not drowned out by CT-ICH; otherwise each label over all data.
    balance_sources: bool = False
    # Balance the labels inside each dataset, keeping each dataset's share of the total, so
    # that which collection an image comes from says nothing about its label.
    balance_labels_per_source: bool = False
    # What the checkpoint and early stopping follow on the validation split: "auc" (pooled over
    # datasets) or "source_auc" (the mean of each dataset's own AUC, blind to which dataset
    # has more positives).
    monitor: str = "auc"
    # Stochastic weight averaging: from this epoch on (counting from 1) the weights at the end
    # of every epoch are averaged, at a constant learning rate and without early stopping, and
    # the average (with batch-normalisation statistics measured again) is the model, instead
    # of the best checkpoint.
    average_from_epoch: int | None = None
    # Augmentation's down-then-up sampling scale and blur (see AugmentationConfig).
    resample_min_scale: float = 0.25
    blur_max_sigma: float = 1.5

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.image_size, clahe=self.clahe)

    def command(self) -> str:
        """The ``python -m ml.train`` command line that trains with this configuration."""
        parts = [
            f"python -m ml.train --name {self.name} --version {self.version}",
            f"--backbone {self.backbone} --datasets {' '.join(self.datasets)}",
            f"--epochs {self.epochs} --batch-size {self.batch_size} --image-size {self.image_size}",
            f"--time-budget-min {self.time_budget_minutes:g} --seed {self.seed}",
        ]
        defaults = TrainConfig()
        for flag, attribute in _OPTIONAL_FLAGS:
            value = getattr(self, attribute)
            if value == getattr(defaults, attribute):
                continue
            if isinstance(value, bool):
                parts.append(flag)
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts)


# Command-line options named only when they differ from TrainConfig's defaults.
_OPTIONAL_FLAGS = (
    ("--width", "width"),
    ("--clahe", "clahe"),
    ("--learning-rate", "learning_rate"),
    ("--init-from", "init_from"),
    ("--patience", "patience"),
    ("--balance-sources", "balance_sources"),
    ("--balance-labels-per-source", "balance_labels_per_source"),
    ("--monitor", "monitor"),
    ("--average-from-epoch", "average_from_epoch"),
    ("--resample-min-scale", "resample_min_scale"),
    ("--blur-max-sigma", "blur_max_sigma"),
)


MONITORS = ("auc", "source_auc")


def check_config(config: TrainConfig) -> None:
    """Refuse option combinations that cannot train, before anything is read or written."""
    if config.balance_sources and config.balance_labels_per_source:
        raise ValueError("Choose one weighting: balance_sources or balance_labels_per_source.")
    if config.monitor not in MONITORS:
        raise ValueError(f"Unknown monitor {config.monitor!r}; choose one of {MONITORS}.")
    if config.average_from_epoch is not None and not 1 <= config.average_from_epoch <= config.epochs:
        raise ValueError(
            f"average_from_epoch must lie in 1..{config.epochs}, got {config.average_from_epoch}."
        )
