"""The command line: help, listings, a run, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crossmodal.cli import main


def test_help_documents_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("run", "tasks", "methods", "reproduce", "data"):
        assert word in out


def test_run_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--task", "--method", "--profile", "--epochs", "--seed", "--out", "--resume"):
        assert opt in out


def test_tasks_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "CIFAR100" in out and "DiffusionReaction2D" in out and "smoke_digits" in out
    assert "offline" in out


def test_methods_listing(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "nft" in out and "fpt" in out and "scratch" in out and "train_layernorm" in out


def test_unknown_task_is_a_clear_error(capsys):
    assert main(["run", "--task", "nope", "--method", "nft"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nope'" in err and "smoke_digits" in err


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["run", "--task", "smoke_gunpoint", "--method", "nope"]) == 2
    assert "valid methods" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_runs_a_task(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "crossmodal.cli", "run", "--task", "smoke_basicmotions",
         "--method", "fpt", "--epochs", "1", "--out", str(out), "--no-progress",
         "-t", "batch_size=8"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["train"]["batch_size"] == 8 and result["method"] == "fpt"
