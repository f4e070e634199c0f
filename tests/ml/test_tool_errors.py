"""Every command-line tool answers a usage or data error with one line on stderr and exit status 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ml.cli import ArgumentParser, data_errors
from ml.errors import DataError, MissingDataFile

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# What TensorFlow's C++ runtime prints on stderr when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says.
TENSORFLOW_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called|[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\])"
)


def run_tool(arguments: list[str], **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **environment},
        capture_output=True,
        text=True,
        timeout=180,
    )


# Each tool with a usage or data error: its arguments ({tmp}: the test's folder, holding bad.csv,
# a CT-ICH style label file whose first row has no image path, and bundle/, whose card is not
# JSON), a piece of the expected message, and environment variables.
CASES: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "evaluate-bad-csv": (
        [
            "ml.evaluate",
            "--model-dir",
            "{tmp}/missing",
            "--labels",
            "{tmp}/bad.csv",
            "--image-col",
            "brain_path",
        ],
        "bad.csv, line 2: empty 'brain_path'",
        {},
    ),
    "evaluate-missing-csv": (
        ["ml.evaluate", "--model-dir", "{tmp}/missing", "--labels", "{tmp}/none.csv"],
        "Label file not found",
        {},
    ),
    "evaluate-bad-option": (
        [
            "ml.evaluate",
            "--model-dir",
            "{tmp}/missing",
            "--labels",
            "{tmp}/bad.csv",
            "--choose-threshold",
            "2",
        ],
        "--choose-threshold takes a sensitivity",
        {},
    ),
    "evaluate-unknown-option": (
        ["ml.evaluate", "--model-dir", "{tmp}", "--labels", "{tmp}/bad.csv", "--labels-file", "x.csv"],
        "unrecognized arguments",
        {},
    ),
    "evaluate-seg-bad-csv": (
        ["ml.evaluate_seg", "--model-dir", "{tmp}/missing", "--labels", "{tmp}/bad.csv"],
        "has no column 'image'",
        {},
    ),
    "evaluate-seg-bad-card": (["ml.evaluate_seg", "--model-dir", "{tmp}/bundle"], "is not valid JSON", {}),
    "train-missing-init": (
        ["ml.train", "--data-dir", "{tmp}", "--init-from", "{tmp}/missing/model.keras"],
        "--init-from: no such file",
        {},
    ),
    "train-both-weightings": (
        ["ml.train", "--balance-sources", "--balance-labels-per-source"],
        "not allowed with argument",
        {},
    ),
    "train-unknown-dataset": (
        ["ml.train", "--data-dir", "{tmp}", "--datasets", "mnist", "--output", "{tmp}/out"],
        "Unknown dataset 'mnist'",
        {},
    ),
    "train-seg-missing-classifier": (
        ["ml.train_seg", "--data-dir", "{tmp}", "--classifier-dir", "{tmp}/missing"],
        "--classifier-dir: no such folder",
        {},
    ),
    "export-missing-bundle": (["ml.export", "--model-dir", "{tmp}/missing"], "No model_card.json", {}),
    "multitask-bundle-missing-run": (
        ["ml.multitask_bundle", "--run-dir", "{tmp}/missing", "--output", "{tmp}/out"],
        "holds no train_config.json",
        {},
    ),
    "train-multitask-missing-encoder": (
        [
            "ml.train_multitask",
            "--output",
            "{tmp}/run",
            "--backbone",
            "compact",
            "--encoder-from",
            "{tmp}/none.keras",
        ],
        "--encoder-from: no model file",
        {},
    ),
    "train-multitask-missing-data": (
        ["ml.train_multitask", "--output", "{tmp}/run", "--data-dir", "{tmp}/nothing"],
        "Label file not found",
        {},
    ),
    "tta-missing-model": (
        ["ml.evaluate_tta", "--model-dir", "{tmp}/missing"],
        "holds no train_config.json",
        {},
    ),
    "scores-missing-model": (
        ["ml.evaluate_scores", "--model-dir", "{tmp}/missing"],
        "holds no train_config.json",
        {},
    ),
    "export-bad-card": (["ml.export", "--model-dir", "{tmp}/bundle"], "is not valid JSON", {}),
    "compare-no-cards": (["ml.compare", "{tmp}/missing"], "holds a model_card.json", {}),
    "compare-bad-card": (["ml.compare", "{tmp}/bundle"], "is not valid JSON", {}),
    "app-cli-bad-setting": (["app.cli", "keys", "list"], "ICH_PORT", {"ICH_PORT": "eighty"}),
    "app-cli-unknown-command": (["app.cli", "keys", "rotate"], "invalid choice", {}),
    "bench-bad-count": (["bench", "--requests", "0", "--skip-http"], "requests must be at least 1", {}),
    "bench-missing-store": (
        ["bench", "--model-store", "{tmp}/missing", "--skip-http", "--quick", "--output", "{tmp}/bench.json"],
        "No model bundle named 'ich-multitask'",
        {},
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_tool_answers_a_usage_or_data_error_in_one_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("brain_path,label,patient_id\n,1,049\n", encoding="utf-8")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model_card.json").write_text("{not json", encoding="utf-8")
    template, expected, environment = CASES[case]
    arguments = [argument.format(tmp=tmp_path) for argument in template]
    finished = run_tool(arguments, ICH_DATA_DIR=str(tmp_path / "data"), **environment)
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    lines = [
        line for line in finished.stderr.splitlines() if line.strip() and not TENSORFLOW_NOISE.match(line)
    ]
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith(f"python -m {arguments[0]}") and ": error: " in lines[0], lines[0]
    assert expected in lines[0]
    assert finished.stdout == ""


def test_data_errors_exit_with_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="tool")
    with pytest.raises(SystemExit) as stopped, data_errors(parser):
        raise DataError("labels.csv, line 3:\n  label must be 0 or 1.")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "tool: error: labels.csv, line 3: label must be 0 or 1.\n"
    with pytest.raises(SystemExit) as stopped, data_errors(parser):
        raise MissingDataFile("Label file not found: labels.csv.")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "tool: error: Label file not found: labels.csv.\n"


def test_other_errors_keep_their_traceback() -> None:
    parser = ArgumentParser(prog="tool")
    with pytest.raises(KeyError), data_errors(parser):
        raise KeyError("a bug")
    with pytest.raises(ValueError, match="a bug too"), data_errors(parser):
        raise ValueError("a bug too")
    with pytest.raises(ValueError, match="an option"), data_errors(parser, (FileNotFoundError,)):
        raise ValueError("an option")


def test_a_missing_data_file_is_still_a_file_not_found_error() -> None:
    assert issubclass(MissingDataFile, FileNotFoundError) and issubclass(MissingDataFile, DataError)
    assert issubclass(DataError, ValueError)


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--count", type=int)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--count", "many"])
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err
        == "tool: error: argument --count: invalid int value: 'many' (see tool --help)\n"
    )
