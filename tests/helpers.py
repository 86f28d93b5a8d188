"""Plain helpers shared by several test modules (fixtures live in conftest.py).

Test modules import these as ``from helpers import ...`` (pytest puts tests/ on sys.path, as for conftest.py);
no test module imports another test module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------------------------ run configs

# The tiny MiniLM experiment: demo data, 80 training examples, one epoch (a full `layerinf run` in minutes on CPU).
TINY = {
    "name": "tiny",
    "data": {"source": "demo", "max_train": 80, "max_dev": 40, "noise_rate": 0.2, "seed": 0},
    "model": {"name": "minilm", "max_length": 24},
    "train": {"epochs": 1, "batch_size": 16},
    "score": {"methods": ["tracin", "datainf"], "groups": ["02-03", "CL", "all"], "aggregators": ["mean", "vote"]},
    "filter": {"fraction": 0.3, "baselines": ["none", "random", "oracle"]},
}

# smaller still, for the scale-out tests (tests/test_ray.py, tests/test_gradstore_shards.py): 4 retrainings
SMALL = {**TINY, "data": {**TINY["data"], "max_train": 60},
         "score": {"methods": ["tracin", "datainf"], "groups": ["WE", "CL", "all"], "aggregators": ["mean"]},
         "filter": {"fraction": 0.3, "configs": ["tracin/CL/mean"], "baselines": ["none", "random", "oracle"]}}

# The tiny random decoder for instruction (SFT) data: keyword arguments of find_suspects / advise, and
# (``cli_args(TINY_LLAMA)``) the same recipe as console-script options.
TINY_LLAMA = {"model": "shape:tiny-llama", "max_length": 32, "max_response_length": 8, "epochs": 1, "batch_size": 8}


def cli_args(options: dict) -> list[str]:
    """``{"max_length": 32}`` → ``["--max-length", "32"]`` (in the dict's order)."""
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


# ------------------------------------------------------------------------------------------------ console script

COMMANDS = ["prepare", "finetune", "grads", "score", "retrain", "run", "sweep", "report", "suspects", "advise",
            "demo"]


def layerinf_script() -> str:
    """The installed ``layerinf`` console script (skips, saying why, when it is not installed)."""
    here = Path(sys.executable).parent / "layerinf"
    found = str(here) if here.exists() else shutil.which("layerinf")
    if not found:
        pytest.skip("the layerinf console script is not installed (pip install -e .)")
    return found


def run_main(args, capsys) -> tuple[int, str, str]:
    """``layerinf *args`` in this process (``layerinf.cli.main``): exit code, stdout, stderr."""
    from layerinf.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def layerinf_env(**overrides: str | None) -> dict:
    """The environment of a console-script child: offline, no debug tracebacks, 100 columns, one thread.
    ``NAME=value`` overrides a default; ``NAME=None`` leaves NAME as this process has it."""
    defaults = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LAYERINF_DEBUG": "0",
                "COLUMNS": "100", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    defaults.update(overrides)
    return {**os.environ, **{k: v for k, v in defaults.items() if v is not None}}


def run_cli(*args, cwd=None, timeout: float = 300, **env: str | None) -> subprocess.CompletedProcess:
    """``layerinf *args`` as a child process (``env``: overrides of :func:`layerinf_env`)."""
    return subprocess.run([layerinf_script(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=layerinf_env(**env))


# The console script's own entry (as the installed `layerinf` wrapper calls it) under an audit hook that records,
# in the file named by $LAYERINF_TEST_AUDIT, every network connection or name lookup and every model file opened:
# weights (by suffix) or a config / tokenizer file outside the working folder (transformers reads those first).
_AUDITED_MAIN = """
import os, sys

_log = open(os.environ["LAYERINF_TEST_AUDIT"], "w", encoding="utf-8")
_here = os.getcwd() + os.sep
_weights = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".onnx")
_model_files = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "generation_config.json")


def _hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        _log.write(f"{event} {args[1:2] if event == 'socket.connect' else args[:2]!r}\\n")
    elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.endswith(_weights) or (os.path.basename(path) in _model_files and not path.startswith(_here)):
            _log.write(f"open {path}\\n")
    else:
        return
    _log.flush()


sys.addaudithook(_hook)
from layerinf.cli import main

sys.argv[0] = "layerinf"
sys.exit(main())
"""


def run_cli_audited(*args, cwd, audit_log: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``layerinf *args`` as :func:`run_cli` runs it, plus what it reached for: each network connection or name
    lookup and each model file (weights, or a config/tokenizer file outside ``cwd``) it opened, one line each."""
    res = subprocess.run([sys.executable, "-c", _AUDITED_MAIN, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=cwd, env=layerinf_env(LAYERINF_TEST_AUDIT=str(audit_log)))
    return res, audit_log.read_text(encoding="utf-8").splitlines()


def run_sft_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """:func:`run_cli` as the instruction-data tests run it: 120 columns (their console tables are wide), torch
    threads as this process has them."""
    return run_cli(*args, timeout=timeout, COLUMNS="120", OMP_NUM_THREADS=None)


def one_error_line(res: subprocess.CompletedProcess, code: int = 2, *, names_a_fix: bool = True) -> str:
    """The one ``error: `` line of a failed command (asserting everything else about the failure; with
    ``names_a_fix``, that the line has the ``problem — fix`` form)."""
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    if names_a_fix:
        assert " — " in lines[0], f"the line names no fix: {lines[0]}"
    return lines[0]


# ------------------------------------------------------------------------------------------------ files


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file (and 'dir' for every folder) below ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "dir" if p.is_dir() and not p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def flip_byte(path: Path, at: float = 0.5) -> None:
    """Flip one byte of ``path`` (all its bits), in the middle by default."""
    data = bytearray(path.read_bytes())
    i = min(len(data) - 1, int(len(data) * at))
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ SFT data

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "forest", "window", "rocket",
         "garden", "silver", "mirror", "pepper", "castle", "button", "dragon", "jacket", "meadow", "orange", "planet",
         "bridge", "copper", "velvet", "harbor", "falcon", "marble", "sunset", "violin"]


def instruction_rows() -> list[dict]:
    """Free-form instructions (not class words), with HTML-special characters in every prompt."""
    return [{"prompt": f"Write the word <{w}> in capital letters & nothing else.", "response": w.upper()}
            for w in WORDS]


# ------------------------------------------------------------------------------------------------ browser


def chromium_driver():
    """A headless Chromium WebDriver (skips, saying why, when chromium/chromedriver or selenium is absent)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium/chromedriver not found (run scripts/setup-test.sh as root to install them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (run scripts/setup-test.sh)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,2000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
