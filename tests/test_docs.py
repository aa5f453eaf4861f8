"""The READMEs as a newcomer reads them: the top-level guide stays short and shows the three jobs on its first screen,
everything it cites exists (files, links, Make targets, command-line options), every `make` line it shows runs as a
dry run, and no tracked file points at notes or issue numbers that live outside the repository."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV = Path(sys.prefix)
FIRST_SCREEN = 60  # lines
JOBS = {"train": "wider face", "bitstream": "bitstream", "board": "board"}  # job -> words its heading holds


def tracked(pattern: str = "*") -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", pattern], capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.splitlines()]


def readmes() -> list[Path]:
    found = [p for p in tracked("*README.md") if p.is_file()]
    assert README in found
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_a_short_guide():
    assert README.stat().st_size <= 16 * 1024, f"README.md is {README.stat().st_size} bytes; move details to an area README"


def test_the_three_jobs_are_on_the_first_screen():
    lines = README.read_text().splitlines()
    headings = {slug(m.group(1)): m.group(1) for m in (re.match(r"^#{2,3} (.+)$", line) for line in lines) if m}
    first = "\n".join(lines[:FIRST_SCREEN])
    anchors = re.findall(r"\]\(#([\w-]+)\)", first)
    for job, words in JOBS.items():
        hits = [a for a in anchors if a in headings and all(w in headings[a].lower() for w in words.split())]
        assert hits, f"no link to the '{job}' quick start ({words}) in README.md's first {FIRST_SCREEN} lines"
    for a in anchors:
        assert a in headings, f"README.md links to #{a}, which no heading makes"


def test_no_reference_outside_the_repository():
    # built from parts so that this file does not match itself
    notes = "|".join(n + r"\.md" for n in ("FACTS", "DESIGN"))
    pattern = re.compile(notes + r"|issue ?#?[0-9]+|#[0-9]{2}\b")
    hits = []
    for path in tracked():
        if not path.is_file() or path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}" for i, line in enumerate(text.splitlines(), 1)
                 if pattern.search(line)]
    assert not hits, "cite the public source (paper, URL, notebook) instead:\n" + "\n".join(hits)


def cited_paths(readme: Path) -> list[str]:
    """Relative link targets, and backticked paths whose first folder exists next to the README or at the root
    (so `flow/hw/z2.py` or `loop.py`'s folder is checked, and a run folder's `RUN/finn/...` or another project's
    `finn/util/...` is not)."""
    text = readme.read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not re.match(r"[a-z]+:", t)]
    ticks = [t.rstrip("/") for t in re.findall(r"`([\w.][\w./-]*/[\w./-]*)`", text)]
    return links + [t for t in ticks if not re.search(r"[<>*{}…]", t)]


def ignored(path: Path) -> bool:
    """git ignores it (data/, runs/, build/: made by the flow or the suite, never part of the repository)."""
    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0


def test_every_path_a_readme_cites_exists():
    missing = []
    for readme in readmes():
        for cited in cited_paths(readme):
            bases = [readme.parent, ROOT]
            first = cited.split("/")[0]
            if first in ("", ".", ".."):
                bases = [readme.parent]
            elif not any((b / first).exists() and not ignored(b / first) for b in bases):
                continue  # a run folder's or another project's path (or one the suite made, e.g. data/)
            if not any((b / cited).exists() for b in bases):
                missing.append(f"{readme.relative_to(ROOT)}: {cited}")
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    heads = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))
    from models import PRESETS  # the Makefile's train-<preset> targets (tests/test_make.py checks it asks for these)

    return heads | {f"train-{p}" for p in PRESETS}


def make_commands(readme: Path) -> list[str]:
    """Every `make ...` a README shows: code-block lines and inline code, comments cut off."""
    text = readme.read_text()
    found = [line.split("#")[0].strip() for line in text.splitlines() if re.match(r"\s*make\s", line)]
    found += [m for m in re.findall(r"`(make [^`]+)`", text)]
    return sorted({" ".join(c.split()) for c in found})


def test_every_make_target_a_readme_shows_exists():
    targets = makefile_targets()
    for readme in readmes():
        for cmd in make_commands(readme):
            for word in cmd.split()[1:]:
                if "=" not in word and not word.startswith("-"):
                    assert word in targets, f"{readme.relative_to(ROOT)} shows `{cmd}`: no Make target {word}"
    shown = " ".join(make_commands(README))
    for must in ("make demo", "make test", "make install", "make bitstream", "make deploy"):
        assert must in shown


def all_make_commands() -> list[str]:
    return sorted({c for readme in readmes() for c in make_commands(readme)})


def test_every_make_target_has_a_line_in_the_readme():
    """The README's Make targets table names every target of the Makefile (a new target gets its line)."""
    text = README.read_text()
    table = text[text.index("## Make targets"):]
    table = table[:table.index("\n## ")]
    named = set(re.findall(r"^\| `([\w-]+)`|/ `([\w-]+)`", table, re.M))
    named = {n for pair in named for n in pair if n}
    presets = {t for t in makefile_targets() if t.startswith("train-")}
    missing = sorted(makefile_targets() - presets - named - {"train-%"})
    assert "train-<preset>" in table and not missing, f"Make targets without a line in README.md: {missing}"


@pytest.mark.parametrize("cmd", all_make_commands())
def test_every_make_line_of_the_readmes_dry_runs(cmd):
    """The READMEs' own `make` lines, as typed (variables included), with -n: each runs what the Makefile says and
    none is "Nothing to be done"; -o keeps a dry run from (re)installing."""
    args = cmd.split()[1:]
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", "-o", f"{VENV}/.installed",
                        f"VENV={VENV}", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"`{cmd}` -n failed:\n{r.stdout}\n{r.stderr}"
    assert "Nothing to be done" not in r.stdout + r.stderr or args == ["install"], r.stdout
    if args and args[0].startswith("train-"):
        assert " -m flow train " in r.stdout, r.stdout


def python_commands() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(module, subcommand words, options) of every `python -m flow|board ...` the READMEs show."""
    found = set()
    for readme in readmes():
        for m in re.finditer(r"python3? -m (flow|board)((?: [^\s`#]+)*)", readme.read_text()):
            words = m.group(2).split()
            sub = tuple(w for w in _leading(words))
            opts = tuple(sorted(set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2)))))
            found.add((m.group(1), sub, opts))
    return sorted(found)


def _leading(words: list[str]):
    for w in words:
        if not re.fullmatch(r"[a-z][a-z0-9]*", w):
            return
        yield w


def _merged() -> dict[tuple[str, tuple[str, ...]], set[str]]:
    merged: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for module, sub, opts in python_commands():
        merged.setdefault((module, sub), set()).update(opts)
    return merged


@pytest.mark.parametrize("module,sub", sorted(_merged()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_every_python_command_a_readme_shows_exists_with_its_options(module, sub):
    """`python -m flow|board <sub> --help`, in this process (the CLI's own entry point): it exists, and lists every
    option the READMEs show with it."""
    import contextlib
    import importlib
    import io

    main = importlib.import_module("flow.cli" if module == "flow" else "board.__main__").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*sub, "--help"])
        except SystemExit as e:  # argparse's --help
            code = e.code
    assert code in (0, None), f"python -m {module} {' '.join(sub)} --help: {code}\n{out.getvalue()}\n{err.getvalue()}"
    opts = _merged()[(module, sub)] - {"--help"}
    unknown = sorted(o for o in opts if o not in out.getvalue())
    assert not unknown, f"a README shows python -m {module} {' '.join(sub)} with {unknown}, which its --help lacks"
