"""What goes to the user's terminal: progress bars and rich tables. A bar redraws itself with carriage returns,
hundreds of them an epoch; in a log file or CI output each redraw is a line of noise. So a bar is drawn only
when its stream (stderr) is a terminal; rich writes colour codes only when stdout is one (or FORCE_COLOR asks for
them). Every progress bar and rich console in `flow/` comes from here."""

from __future__ import annotations

import sys


def progress(it, total: int | None = None, desc: str = "", show: bool = True):
    """`it` wrapped in a tqdm bar on stderr when `show` and stderr is a terminal; otherwise `it` itself."""
    if not (show and sys.stderr.isatty()):
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def console(min_width: int = 0):
    """A rich Console on stdout, at least `min_width` columns wide (a table stays readable in a narrow window or a
    log, where rich would assume 80)."""
    from rich.console import Console

    return Console(width=max(min_width, Console().width) if min_width else None)
