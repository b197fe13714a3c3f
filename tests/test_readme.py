"""README drift fails here: its one folder name, and its example block run as written after a (toy) quickstart."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from conftest import invoke

from nerfgan.cli import export_main, main, run_main
from nerfgan.quickstart import STAGES, Quickstart

README = Path(__file__).resolve().parent.parent / "README.md"
STEPS = 40  # training steps of the toy quickstart: enough for README's parity gate (--min-psnr 12), whatever the machine
ENTRIES = {"nerfgan": main, "nerfgan-export": export_main, "nerfgan-run": run_main}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def examples() -> list[str]:
    """The bash block under 'Examples, after `nerfgan quickstart -o qs`'."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Examples, after `nerfgan quickstart -o qs`")
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_one_folder_name_through_the_readme():
    run = next(b for b in blocks("bash") if "nerfgan quickstart" in b)
    assert run.strip() == "nerfgan quickstart -o qs"
    python = next(b for b in blocks("python") if "nr.load(" in b)
    assert re.findall(r'nr\.load\("([^"]+)"', python) == ["qs/export"]
    for line in examples():
        folders = {p.split("/")[0] for p in re.findall(r"\b(\w+)/[\w.]+", line)}
        assert folders <= {"qs"}, line  # every path into the quickstart's folder names it qs


@pytest.fixture(scope="module")
def after_quickstart(tmp_path_factory):
    """A folder where `nerfgan quickstart -o qs` has run: toy size, the stages the examples need, and a fixed number
    of training steps (not minutes), so that the student passes README's parity threshold on any machine."""
    root = tmp_path_factory.mktemp("readme")
    later = {stage: (lambda: {}) for stage in STAGES[STAGES.index("images"):]}
    Quickstart(str(root / "qs"), minutes=1.0, renders=8, force=False, device="cpu", echo=lambda s: None,
               steps=STEPS).run(later)
    return root


def test_readme_examples_run_as_written(after_quickstart, monkeypatch, capsys):
    monkeypatch.chdir(after_quickstart)
    lines = examples()
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line)
        code, out, err = invoke(ENTRIES[argv[0]], argv[1:], capsys)
        assert code == 0, f"{line}\n{err}"
    python = next(b for b in blocks("python") if "nr.load(" in b)
    scope: dict[str, object] = {}
    exec(compile(python, "README.md", "exec"), scope)  # the From Python snippet, as written
    assert scope["frames"].shape == (3, 128, 128, 3)  # type: ignore[attr-defined]
    for line in lines:  # every picture an example names was written and opens
        for name in re.findall(r"-o (\S+\.(?:png|gif))", line):
            with Image.open(after_quickstart / name) as im:
                assert im.size[0] >= 128, name
