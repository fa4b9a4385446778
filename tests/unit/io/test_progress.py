"""The one progress display: a tqdm bar on a terminal, plain lines (phase, step/total, loss, s/step, ETA)
in a captured stream, nothing when not shown; the training loop's steps go through it."""

from __future__ import annotations

import io
import re

import torch
from tqdm.auto import tqdm

from simo_merge import progress
from simo_merge.progress import progress_bar
from simo_merge.training.loop import fit

LINE = re.compile(r"^phase: (\d)/3 \(\d+%\) \| loss=0\.\d+ \| [\d.e-]+ s/step \| ETA \d+s$")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _run(monkeypatch, tty: bool, **kwargs) -> tuple[object, list[str]]:
    stream = _Stream(tty)
    monkeypatch.setattr(progress.sys, "stderr", stream)
    bar = progress_bar(range(3), "phase", **kwargs)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss=f"{0.5 / (i + 1):.4f}")
    assert seen == [0, 1, 2]
    return bar, stream.getvalue().splitlines()


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    _, lines = _run(monkeypatch, tty=False, every_s=0.0)  # a line per step
    assert [LINE.match(x).group(1) for x in lines] == ["1", "2", "3"], lines
    assert lines[0].startswith("phase: 1/3 (33%) | loss=0.5000 |")
    # an interval longer than the loop: the first and the last step only
    _, lines = _run(monkeypatch, tty=False, every_s=1e9)
    assert [LINE.match(x).group(1) for x in lines] == ["1", "3"], lines
    _, lines = _run(monkeypatch, tty=False, show=False)
    assert lines == []


def test_a_bar_on_a_terminal(monkeypatch):
    bar, _ = _run(monkeypatch, tty=True)
    assert isinstance(bar, tqdm)


def test_training_steps_report_through_it(monkeypatch):
    stream = _Stream(tty=False)
    monkeypatch.setattr(progress.sys, "stderr", stream)
    w = torch.nn.Parameter(torch.ones(2))
    loader = [{"x": torch.ones(2)}]
    fit(
        lambda b: ((w * b["x"]).sum() ** 2, {}),
        [{"params": [w], "lr": 0.1}],
        loader,
        2,
        desc="expert a: probe",
    )
    lines = stream.getvalue().splitlines()
    assert [x.split(" | ")[0] for x in lines] == ["expert a: probe: 1/2 (50%)", "expert a: probe: 2/2 (100%)"]
    assert all(re.search(r"\| loss=\d+\.\d{4} \|", x) and "s/step | ETA" in x for x in lines), lines
