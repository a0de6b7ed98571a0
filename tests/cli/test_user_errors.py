"""User mistakes end in one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from fraudfl.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "banks"
    code = main(["--log-level", "WARNING", "generate-data", "banks", "--out", str(out),
                 "--banks", "2", "--transactions", "600", "--seed", "0"])
    assert code == 0
    return out


def _fails_with(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "ERROR", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_negative_secagg_degree(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with(
        ["simulate", "--data", str(data), "--secure-aggregation", "--secagg-neighbours", "-1",
         "--no-progress"],
        "neighbours must be >= 0", capsys,
    )


def test_output_directory_under_a_file(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = data / "bank_00.csv"
    _fails_with(["generate-data", "banks", "--out", str(a_file / "new")],
                "cannot create the output directory", capsys)
    _fails_with(["keys", "generate", "--id", "bank-a", "--out", str(a_file)],
                "exists and is not a directory", capsys)
    _fails_with(["keys", "generate", "--id", "bank-a", "--out", str(a_file / "keys")],
                "cannot create the key directory", capsys)


def test_serve_on_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sigterm = signal.getsignal(signal.SIGTERM)  # serve installs its own handler
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _fails_with(["serve", "--model", str(tmp_path), "--port", str(port)],
                    f"cannot listen on 127.0.0.1:{port}", capsys)
    signal.signal(signal.SIGTERM, sigterm)


def test_piped_tables_keep_whole_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rich assumes 80 columns when not on a terminal and cut bank ids to "bank_…".
    label = "a-bank-with-a-rather-long-participant-identifier-0001"
    (tmp_path / f"{label}.json").write_text(json.dumps({
        "format": "fraudfl.privacy.accountant", "version": 1, "label": label,
        "mechanism": "rdp", "budget": {"epsilon": 8.0, "delta": 1e-5},
        "history": [[1.1, 0.0123456789, 1000]],
    }))
    assert main(["privacy", "--state-dir", str(tmp_path)]) == 0
    assert label in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "expected"), [
    (["--secagg-neighbours", "2"], "--secagg-neighbours needs --secure-aggregation"),
    (["--bank-dp-delta", "0.01"], "--bank-dp-delta needs --bank-dp-clip and --bank-dp-noise"),
    (["--strategy", "fedavg", "--mu", "0.1"], "--mu needs --strategy fedprox"),
    (["--server-lr", "0.5"], "--server-lr needs --strategy fedavgm"),
    (["--strategy", "fedavgm", "--tau", "0.1"], "--tau needs --strategy fedadam or fedyogi"),
    (["--max-grad-norm", "2"], "--max-grad-norm needs --target-epsilon or --noise-multiplier"),
    (["--accountant", "prv"], "--accountant needs --target-epsilon or --noise-multiplier"),
    (["--personalization", "finetune", "--ditto-lambda", "1"],
     "--ditto-lambda needs --personalization ditto"),
    (["--personal-epochs", "2"], "--personal-epochs needs --personalization finetune or ditto"),
])
def test_simulate_flags_that_would_be_ignored(
    data: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    _fails_with(["simulate", "--data", str(data), "--no-progress", *flags], expected, capsys)


@pytest.mark.parametrize(("flag", "name", "expected"), [
    ("--plot", "curves.txt", "expected a file name ending in .png"),
    ("--plot", "curves", "expected a file name ending in .png"),
    ("--out", ".", "is a directory; expected a file name for the results JSON"),
])
def test_simulate_output_paths_checked_before_the_run(
    data: Path, capsys: pytest.CaptureFixture[str], flag: str, name: str, expected: str
) -> None:
    # --plot curves.txt was a ValueError traceback after the whole run; --plot curves wrote
    # curves.png while reporting "plots written to curves".
    _fails_with(["simulate", "--data", str(data), flag, str(data / name)], expected, capsys)


def test_allowlist_that_cannot_be_written(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    _fails_with(["keys", "enroll", "--allowlist", str(data / "bank_00.csv" / "allowlist.json"),
                 "--id", "bank-a", "--role", "bank", "--public-key", str(tmp_path / "bank-a.pub")],
                "cannot write allowlist", capsys)


def test_privacy_state_dir_that_cannot_be_created(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails_with(["simulate", "--data", str(data), "--noise-multiplier", "1", "--no-progress",
                 "--privacy-state-dir", str(data / "bank_00.csv")],
                "cannot create the privacy state directory", capsys)


@pytest.mark.parametrize(("argv", "expected"), [
    (["generate-data", "fedprox-synthetic", "--devices", "2", "--alpha", "nan"],
     "alpha and beta must be >= 0"),
    (["simulate", "--strategy", "fedavgm", "--server-lr", "nan"],
     "StrategySettings.server_lr: Input should be a finite number"),
    (["simulate", "--strategy", "fedyogi", "--eta", "nan"],
     "StrategySettings.eta: Input should be a finite number"),
    (["simulate", "--noise-multiplier", "1", "--max-grad-norm", "inf"],
     "--max-grad-norm must be a finite number > 0"),
    (["serve", "--model", ".", "--poll-interval", "nan"], "--poll-interval must be a finite"),
])
def test_nan_and_inf_flag_values(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
    expected: str,
) -> None:
    # NaN passed checks written as "x <= 0": NaN data, a NaN model after training, a server
    # polling with a NaN interval.
    sigterm = signal.getsignal(signal.SIGTERM)
    where = ["--out", str(tmp_path / "out")] if argv[0] == "generate-data" else (
        ["--data", str(data), "--no-progress"] if argv[0] == "simulate" else [])
    _fails_with([*argv, *where], expected, capsys)
    signal.signal(signal.SIGTERM, sigterm)
