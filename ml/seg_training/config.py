"""The segmentation model's training configuration and the command that reproduces a run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SegTrainConfig:
    """Hyperparameters; written next to the model as ``train_config.json``."""

    name: str = "ich-unet"
    version: str = "1.0.0"
    classifier_dir: str = "model_store/ich-compact/1.0.0"
    width: int = 16
    batch_size: int = 16
    steps_per_epoch: int = 16
    epochs: int = 60
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    time_budget_minutes: float = 30.0
    validation_volumes: int = 5
    test_volumes: int = 10
    mix_masked: float = 0.45
    mix_normal: float = 0.30
    subtype_loss_weight: float = 0.5
    seed: int = 42
    bootstrap_resamples: int = 1000
    max_ct_ich: int | None = None
    init_from: str | None = None


def reproduce_command(config: SegTrainConfig) -> str:
    """The ``python -m ml.train_seg`` command line that trains with this configuration."""
    return (
        f"python -m ml.train_seg --name {config.name} --version {config.version} "
        f"--classifier-dir {config.classifier_dir} --epochs {config.epochs} "
        f"--time-budget-min {config.time_budget_minutes:g} --seed {config.seed}"
        + (
            f" --learning-rate {config.learning_rate:g}"
            if config.learning_rate != SegTrainConfig.learning_rate
            else ""
        )
        + (f" --init-from {config.init_from}" if config.init_from else "")
    )
