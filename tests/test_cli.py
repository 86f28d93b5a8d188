"""The CLI: bad input gives one clear line, exit status 2, and no half-written stage."""

import re

import pandas as pd
import pytest

from layerinf.cli import main


def _run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stage_dirs(run):
    return sorted(p.name for p in run.iterdir()) if run.exists() else []


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--source", "/nonexistent/file.csv"], "does not exist|not found|no such"),
        (["--noise-rate", "1.5"], "noise"),
        (["--noise-rate", "-0.1"], "noise"),
    ],
)
def test_prepare_bad_input(tmp_path, capsys, extra, match):
    run = tmp_path / "run"
    code, out, err = _run(["prepare", str(run), *extra], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(match, err, flags=re.I), err
    assert "data" not in _stage_dirs(run)
    assert not any(p.name.endswith(".tmp") for p in run.iterdir()) if run.exists() else True


def test_csv_column_errors(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("sentence,y\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    code, _, err = _run(["prepare", str(tmp_path / "r"), "--source", str(f), "--text-column", "text",
                         "--label-column", "y"], capsys)
    assert code == 2 and "text" in err and "sentence" in err  # names the missing column and the available ones
    code, _, err = _run(["prepare", str(tmp_path / "r"), "--source", str(f), "--text-column", "sentence",
                         "--label-column", "label"], capsys)
    assert code == 2 and "label" in err


def test_finetune_before_prepare_and_unknown_model(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _run(["finetune", str(run)], capsys)
    assert code == 2 and "prepare" in err
    code, _, _ = _run(["prepare", str(run), "--source", "demo", "--max-train", "60", "--max-dev", "40"], capsys)
    assert code == 0
    code, _, err = _run(["finetune", str(run), "--model", "no-such-model-xyz", "--epochs", "1"], capsys)
    assert code == 2 and "unknown model" in err
    assert "finetune" not in _stage_dirs(run)


@pytest.mark.slow
def test_corrupted_adapter_is_redone_or_reported(tmp_path, capsys):
    from layerinf.errors import LayerinfError
    from layerinf.stages.finetune import load_finetuned

    run = tmp_path / "run"
    assert _run(["prepare", str(run), "--source", "demo", "--max-train", "60", "--max-dev", "40"], capsys)[0] == 0
    assert _run(["finetune", str(run), "--epochs", "1", "--max-length", "32"], capsys)[0] == 0
    best = run / "finetune" / "best.safetensors"
    best.write_bytes(b"\x00garbage")
    with pytest.raises(LayerinfError, match="corrupted"):
        load_finetuned(run, "best")
    # a rerun notices the checksum mismatch and redoes the stage
    assert _run(["finetune", str(run), "--epochs", "1", "--max-length", "32"], capsys)[0] == 0
    load_finetuned(run, "best")


@pytest.mark.slow
def test_every_stage_through_the_cli(tmp_path, capsys, monkeypatch):
    """prepare → finetune → grads → score → run → report → suspects, as a user types them."""
    monkeypatch.setenv("COLUMNS", "160")  # wide enough that rich does not fold method names in the tables
    run = str(tmp_path / "run")
    assert _run(["prepare", run, "--source", "demo", "--max-train", "80", "--max-dev", "40"], capsys)[0] == 0
    assert _run(["finetune", run, "--epochs", "1", "--max-length", "24"], capsys)[0] == 0
    code, out, _ = _run(["grads", run, "--grad-batch-size", "16"], capsys)
    assert code == 0 and "80 train and 20 influence samples" in " ".join(out.split())  # rich wraps lines
    code, out, _ = _run(["score", run, "--methods", "tracin,datainf", "--groups", "02-03,CL",
                         "--aggregators", "mean,vote", "--top", "50"], capsys)
    assert code == 0 and "ndr_30" in out and "datainf" in out
    table = pd.read_csv(tmp_path / "run" / "scores" / "table.csv")
    table = table[table["aggregator"] != "-"]  # rows that are not a method/group/aggregator (e.g. a loss baseline)
    assert len(table) == 2 * 2 * 2 and set(table["group"]) == {"02-03", "CL"}

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\ndata: {source: demo, max_train: 80, max_dev: 40}\nmodel: {max_length: 24}\n"
        "train: {epochs: 1}\nscore: {methods: [tracin], groups: [CL], aggregators: [mean]}\n"
        "filter: {configs: [tracin/CL/mean], baselines: [none, oracle]}\n"
    )
    code, out, _ = _run(["run", str(cfg), "--out", str(tmp_path / "exp"), "--set", "train.batch_size=16"], capsys)
    assert code == 0 and "oracle" in out and "best_ac" in out
    code, out, _ = _run(["report", str(tmp_path / "exp")], capsys)
    assert code == 0 and (tmp_path / "exp" / "report" / "index.html").exists()
    code, out, _ = _run(["suspects", str(tmp_path / "sus"), "--run", str(tmp_path / "exp"), "--method", "tracin",
                         "--group", "CL"], capsys)
    assert code == 0 and "NDR@30" in " ".join(out.split()) and (tmp_path / "sus" / "suspects" / "suspects.csv").exists()
    code, _, err = _run(["run", str(cfg), "--set", "data.nope=1"], capsys)
    assert code == 2 and "unknown config field" in err


def test_brackets_are_printed_as_written_not_as_rich_markup(capsys):
    """Titles, headers and cells with square brackets (model names, hf:NAME[/CONFIG]) never raise rich's
    MarkupError nor lose their text."""
    from layerinf.terminal import print_table

    df = pd.DataFrame({"[bold]col[/bold]": ["a[/x]", "[red]b"], "n": [1, 2]})
    print_table(df, title="fine-tuning hf:org/model[/CONFIG] [/] [bold]")
    out = " ".join(capsys.readouterr().out.split())  # rich wraps to the terminal width
    assert "hf:org/model[/CONFIG] [/] [bold]" in out and "a[/x]" in out and "[red]b" in out
    assert "[bold]col[/bold]" in out


def test_a_table_wider_than_the_terminal_keeps_every_number_whole():
    """Nine numeric columns do not fit 80 columns: the table is drawn wider, no number is cut."""
    import io

    import numpy as np
    from rich.console import Console

    from layerinf.terminal import print_table

    rng = np.random.default_rng()
    df = pd.DataFrame({f"metric_number_{i}": rng.uniform(0, 1, 4) for i in range(8)})
    df.insert(0, "method", ["datainf", "tracin", "cosine", "self_influence"])
    buf = io.StringIO()
    print_table(df, title="many columns", console=Console(file=buf, width=80, color_system=None))
    out = buf.getvalue()
    for value in df.drop(columns="method").to_numpy().ravel():
        assert f"{value:.4f}" in out, (value, out)
    assert all(m in out for m in df["method"])


def test_an_error_with_brackets_is_one_plain_line(tmp_path, capsys):
    code, out, err = _run(["prepare", str(tmp_path / "r"), "--source", "hf:[/bad]"], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and "MarkupError" not in err
