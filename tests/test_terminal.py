"""Progress bars and rich output only on a terminal: a log or CI output gets no carriage-return redraws."""

import io
import sys

from flow.terminal import console, progress


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def drain(monkeypatch, tty: bool, show: bool = True) -> tuple[list, str]:
    err = Stream(tty)
    monkeypatch.setattr(sys, "stderr", err)
    seen = list(progress(iter(range(50)), 50, "epoch 1/1", show))
    return seen, err.getvalue()


def test_a_bar_is_drawn_on_a_terminal_only(monkeypatch):
    seen, drawn = drain(monkeypatch, tty=True)
    assert seen == list(range(50)) and "\r" in drawn and "epoch 1/1" in drawn
    seen, logged = drain(monkeypatch, tty=False)
    assert seen == list(range(50)) and logged == ""
    seen, hidden = drain(monkeypatch, tty=True, show=False)
    assert seen == list(range(50)) and hidden == ""


def test_training_draws_no_bar_into_a_log(monkeypatch):
    from flow.train import loader, loop

    monkeypatch.setattr(sys, "stderr", Stream(False))
    it = iter([1, 2])
    assert loop._bar(it, "epoch", True) is it and loader._bar(it, 2, "decoding images", True) is it


def test_rich_writes_no_escape_codes_into_a_log(monkeypatch):
    from rich.table import Table

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")  # a terminal that takes colour, as a CI runner's may not say
    for tty, codes in ((False, False), (True, True)):
        out = Stream(tty)
        monkeypatch.setattr(sys, "stdout", out)
        t = Table(title="cross-check")
        t.add_column("status")
        t.add_row("[green]ok[/]")
        c = console(130)
        c.print(t)
        assert ("\x1b[" in out.getvalue()) is codes and c.width >= 130
