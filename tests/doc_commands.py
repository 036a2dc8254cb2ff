#!/usr/bin/env python
"""The shell commands of README.md and docs/**/*.md, checked and run as a new user would.

Every line of a ```bash (or sh / shell / console) block is a command; a trailing ``\\`` continues
it, a ``for ...; do`` ... ``done`` loop is one step. Each step is one of:

* **runnable**: runs as written, in the repository root with the venv active, after ``make demo``;
* **synopsis**: it holds placeholders (``CONFIG``, ``W/iter_600.pth``, ``[--flag X]``, ``{a,b}``,
  ``<change>``, ``...``, ``k=v``): the reader fills them in, so it is checked but not run;
* **needs**: it needs what a fresh clone after ``make demo`` does not have (GPUs, real weights or
  datasets, your own files). The docs say so in a shell comment that a reader sees too::

      python tools/train.py configs/x_llava15-7b.py ...   # needs: LLaVA-1.5-7B and SAM ViT-H weights

  A trailing ``# needs: WHAT`` marks its command; a ``# needs: WHAT`` comment line marks every
  command after it up to the next blank line or the end of the block;
* **record**: after a ``<!-- doc-commands: record ... -->`` line, the commands of a work log as they
  ran at the commits it names: neither checked nor run.

A command that serves until interrupted (the web demo) says ``# ... until Ctrl-C`` in its trailing
comment: the run mode starts it, waits for it to print its address, then interrupts it.

Checks of every step (``python tests/doc_commands.py``; ``tests/test_doc_commands.py`` in ``make test``):

* a ``tools/*.py`` / ``tools/research/*.py`` script exists and answers ``--help``, and every
  ``--flag`` of the command is one of its options; ``reseg SUB`` likewise;
* every ``make`` target exists (``make -n``); ``pip install -e ".[extra]"`` names an extra of setup.cfg;
* every config file named exists and parses;
* every ``--cfg-options`` (``--dataset-cfg-options``) key names a key of its config, or an argument
  of the registered type whose dict it goes into;
* a command is not ``python`` / ``reseg`` / ``make`` / ``pip`` / ``torchrun`` / ``bash``: an error
  (the checker would otherwise pass over it).

Run mode (slow; in a fresh clone after ``make demo``)::

    python tests/doc_commands.py --fresh-clone /tmp/reseg-docs     # clone HEAD, make demo, run the runnable steps
    python tests/doc_commands.py --run [FILE ...]                  # run them here (after make demo)

Steps run in document order, file by file, each with ``bash -e -o pipefail``; a step after a failed
one in the same block is not run (it may depend on it), and a step identical to one already run is
not run twice. Each step's output goes to ``work_dirs/doc_commands/``; the summary names every step
that failed with its last lines.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import difflib
import functools
import inspect
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
KNOWN_PROGRAMS = {"python", "python3", "torchrun", "reseg", "make", "pip", "bash", "source"}
#: Flags whose value is a config file; the first positional ``.py`` argument is the command's config.
CONFIG_FLAGS = {"--config", "--dataset-config", "--ar-config", "--proposer"}
#: Which config a flag's ``key=value`` options go into (None: the command's config).
OPTION_FLAGS = {"--cfg-options": None, "--dataset-cfg-options": "--dataset-config"}
SERVER_MARK = "until Ctrl-C"
_PLACEHOLDER_WORD = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/, in a fixed order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


@dataclasses.dataclass
class Step:
    """One command (or one loop) of a doc's shell block."""

    file: str                   # relative to the repository root
    line: int                   # of its first line
    block: int                  # the block's first line: steps of a block run in order
    text: str                   # the shell text to run (comments removed, continuations joined)
    argvs: list[list[str]]      # its simple commands, for the static checks
    needs: str | None = None
    until_interrupt: bool = False
    placeholders: list[str] = dataclasses.field(default_factory=list)
    record: bool = False        # a record of a past run: neither checked nor run

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def kind(self) -> str:
        if self.record:
            return "record"
        if self.needs is not None:
            return "needs"
        return "synopsis" if self.placeholders else "runnable"


# ----------------------------------------------------------------------------- extraction
def _split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)``: the comment starts at the first ``#`` outside quotes after a blank."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _needs(comment: str) -> str | None:
    m = re.search(r"\bneeds:\s*(.*)", comment)
    return m.group(1).strip() if m else None


def _tokens(code: str) -> list[str]:
    lex = shlex.shlex(code, posix=True, punctuation_chars=";&")
    lex.whitespace_split = True
    return list(lex)


def _simple_commands(tokens: list[str]) -> list[list[str]]:
    """The simple commands of a token list: split at ``;`` / ``&&``, leading ``VAR=value`` and the
    loop keywords dropped (``for x in ...`` is no command)."""
    out, cur = [], []
    for tok in [*tokens, ";"]:
        if tok in (";", "&&", "&", "||"):
            while cur and _ASSIGNMENT.match(cur[0]):
                cur.pop(0)
            if cur and cur[0] in ("do", "then", "else"):
                cur.pop(0)
            if cur and cur[0] not in ("for", "while", "done", "fi"):
                out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return out


def is_placeholder(token: str) -> bool:
    """``CONFIG``, ``W/iter_600.pth``, ``seed=S``, ``[--flag``, ``x]``, ``{a,b}``, ``<change>``, ``...``."""
    if " " in token or token.startswith("$("):
        return False
    if token.startswith(("[", "{", "<")) or token in ("...", "k=v") or token.endswith(">"):
        return True
    if token.endswith("]") and "[" not in token:
        return True
    if "|" in token:
        return True
    if _ASSIGNMENT.match(token) or re.match(r"^[\w.]+=", token):   # VAR=value, key.path=value: the value
        token = token.split("=", 1)[1]
    return any(_PLACEHOLDER_WORD.match(part) for part in re.split(r"[=/,:]", token) if part)


def extract(path: Path, root: Path = ROOT) -> list[Step]:
    """The steps of one Markdown file."""
    rel = path.relative_to(root).as_posix()
    steps: list[Step] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    in_block, lang, block = False, "", 0
    scope_needs: str | None = None
    record = False                        # after <!-- doc-commands: record -->
    pending: Step | None = None        # a loop being collected
    logical, first = "", 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_block = not in_block
            lang, block, scope_needs = stripped[3:].strip().lower(), n, None
            continue
        if not in_block:
            record = record or bool(re.match(r"^<!--\s*doc-commands:\s*record\b", stripped))
            continue
        if lang not in SHELL_LANGS:
            continue
        if not logical:
            first = n
        if stripped.endswith("\\"):
            logical += stripped[:-1].rstrip() + " "
            continue
        logical += stripped
        line, logical = logical.strip(), ""
        if not line:
            scope_needs = None
            continue
        code, comment = _split_comment(line)
        if not code:                       # a comment line
            found = _needs(comment)
            scope_needs = scope_needs if found is None else found
            continue
        tokens = _tokens(code)
        needs = _needs(comment) or scope_needs
        argvs = _simple_commands(tokens)
        if pending is not None:
            pending.text += "\n" + code
            pending.argvs += argvs
            pending.needs = pending.needs or needs
            if "done" in tokens:
                steps.append(pending)
                pending = None
            continue
        step = Step(rel, first, block, code, argvs, needs, SERVER_MARK in comment, record=record)
        if tokens and tokens[0] in ("for", "while") and "done" not in tokens:
            pending = step
            continue
        steps.append(step)
    for step in steps:
        step.placeholders = [t for argv in step.argvs for t in argv if is_placeholder(t)]
    return steps


def extract_all(files: list[Path] | None = None, root: Path = ROOT) -> list[Step]:
    return [s for f in (files or doc_files(root)) for s in extract(f, root)]


# ----------------------------------------------------------------------------- static checks
def _python(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _env(root: Path) -> dict[str, str]:
    """The environment of an activated venv, offline, as the Makefile runs things."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    bin_dir = Path(_python(root)).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


@functools.cache
def help_text(root: Path, argv: tuple[str, ...]) -> tuple[int, str]:
    """Exit code and output of ``ARGV --help`` (a script path runs with the venv's Python)."""
    cmd = [_python(root), *argv] if argv[0].endswith(".py") else [*argv]
    if cmd[0] == "reseg":
        cmd[0] = str(Path(_python(root)).parent / "reseg")
    proc = subprocess.run([*cmd, "--help"], cwd=root, env=_env(root), capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", text))


def _flag(token: str) -> str | None:
    tok = token.strip("[]{}")
    if not tok.startswith("--") or len(tok) < 3:
        return None
    return tok.split("=", 1)[0]


def _values(argv: list[str], flag: str) -> list[str]:
    """The tokens after ``flag`` up to the next ``--flag``."""
    out: list[str] = []
    for i, tok in enumerate(argv):
        if _flag(tok) == flag:
            for val in argv[i + 1:]:
                if _flag(val):
                    break
                out.append(val.strip("[]"))
    return out


@functools.cache
def load_config(root: Path, path: str) -> Any:
    from mmengine.config import Config

    return Config.fromfile(str(root / path))


@functools.cache
def _registered(name: str) -> Any:
    """The class a config's ``type`` string names, from reseg's and mmengine's registries."""
    import mmengine.registry as mm

    from reseg.plugins import load_plugins
    from reseg.registry import REGISTRIES

    load_plugins()
    registries = [*REGISTRIES.values(), *(v for v in vars(mm).values() if isinstance(v, mm.Registry))]
    for registry in registries:
        try:
            cls = registry.get(name)
        except Exception:
            cls = None
        if cls is not None:
            return cls
    return None


def _type_accepts(node: dict, name: str) -> bool | None:
    """Whether the type of a config dict takes the argument ``name``; None if the type is unknown."""
    typ = node.get("type")
    cls = _registered(typ) if isinstance(typ, str) else typ
    if cls is None:
        return None
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_key(cfg: Any, key: str) -> str | None:
    """None if ``key`` (dotted, list indices as numbers) names a key of ``cfg``; else what is wrong."""
    node, parts = getattr(cfg, "_cfg_dict", cfg), key.split(".")   # an mmengine Config wraps its ConfigDict
    for k, part in enumerate(parts):
        here = ".".join(parts[:k]) or "the config"
        if node is None:        # a sub-key of an option left unset (model.lmm.lora.r=8 with lora=None)
            return None
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                continue
            if k == len(parts) - 1 and _type_accepts(node, part):
                return None
            close = difflib.get_close_matches(part, [str(x) for x in node], n=1)
            hint = f"; did you mean {'.'.join([*parts[:k], close[0]])!r}?" if close else ""
            typ = f" (type {node['type']!r})" if isinstance(node.get("type"), str) else ""
            return f"{key!r}: {here}{typ} has no key {part!r}{hint}"
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            return f"{key!r}: {here} is a list of {len(node)}, no index {part!r}"
        return f"{key!r}: {here} is a {type(node).__name__}, not a dict"
    return None


@functools.cache
def setup_extras(root: Path) -> frozenset[str]:
    cfg = ConfigParser()
    cfg.read(root / "setup.cfg")
    return frozenset(cfg["options.extras_require"]) if cfg.has_section("options.extras_require") else frozenset()


@functools.cache
def make_dry_run(root: Path, args: tuple[str, ...]) -> tuple[int, str]:
    # a top-level make's own messages: under `make test` the inherited MAKELEVEL would print "make[1]:"
    env = {k: v for k, v in _env(root).items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-n", "-C", str(root), *args], capture_output=True, text=True,
                          env=env, timeout=120)
    return proc.returncode, proc.stderr.strip()


def _script_and_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """For ``python X.py ...`` / ``torchrun ... X.py ...``: the script and its arguments."""
    for i, tok in enumerate(argv[1:], 1):
        if tok.endswith(".py") and not tok.startswith("-"):
            return tok, argv[i + 1:]
        if argv[0].startswith("python") and not tok.startswith("-"):
            break
    return None, []


def _check_configs(root: Path, args: list[str], problems: list[str], own_files: bool) -> None:
    positional = None
    for i, tok in enumerate(args):
        if tok.endswith(".py") and not tok.startswith("-") and (i == 0 or not _flag(args[i - 1])):
            positional = tok
            break
    configs = {None: positional}
    for flag in CONFIG_FLAGS:
        vals = _values(args, flag)
        if vals:
            configs[flag] = vals[0]
    if configs[None] is None:
        configs[None] = configs.get("--config")
    for path in {p for p in configs.values() if p}:
        if is_placeholder(path):
            continue
        if not (root / path).is_file():
            if not own_files or path.startswith("configs/"):   # the reader's own config may be elsewhere
                problems.append(f"config {path!r} does not exist")
            continue
        try:
            load_config(root, path)
        except Exception as err:
            problems.append(f"config {path!r} does not parse: {type(err).__name__}: {str(err)[:200]}")
    for flag, target in OPTION_FLAGS.items():
        path = configs.get(target)
        for opt in _values(args, flag):
            if "=" not in opt or opt == "k=v" or is_placeholder(opt.split("=", 1)[0]):
                continue
            if not path or is_placeholder(path) or not (root / path).is_file():
                continue
            try:
                cfg = load_config(root, path)
            except Exception:
                continue
            wrong = check_key(cfg, opt.split("=", 1)[0])
            if wrong:
                problems.append(f"{flag} {wrong} (config {path})")


def check_command(root: Path, argv: list[str], own_files: bool = False) -> list[str]:
    """What is wrong with one simple command, as one line each (empty: nothing). ``own_files``: the
    command is marked ``needs:``, so a config outside ``configs/`` may be the reader's own."""
    prog = argv[0]
    problems: list[str] = []
    if is_placeholder(prog):
        return []
    if prog not in KNOWN_PROGRAMS:
        return [f"unknown command {prog!r} (the checker knows {sorted(KNOWN_PROGRAMS)})"]
    if prog in ("python", "python3", "torchrun"):
        script, args = _script_and_args(argv)
        if script is None:
            return [] if prog == "torchrun" or argv[1:2] in (["-m"], ["-c"]) else ["no script to run"]
        if is_placeholder(script):
            return []
        if not (root / script).is_file():
            return [f"script {script!r} does not exist"]
        if script.startswith("tools/"):
            code, text = help_text(root, (script,))
            if code != 0:
                return [f"{script} --help exits {code}: {text.strip().splitlines()[-1:] }"]
            options = _options(text)
            problems += [f"{script} has no option {f!r}" for f in map(_flag, args) if f and f not in options]
        _check_configs(root, args, problems, own_files)
    elif prog == "reseg":
        sub = argv[1:2]
        code, text = help_text(root, ("reseg", *sub))
        if code != 0:
            return [f"reseg {' '.join(sub)} --help exits {code}: {text.strip().splitlines()[-1:]}"]
        options = _options(text)
        problems += [f"reseg {sub[0]} has no option {f!r}" for f in map(_flag, argv[2:]) if f and f not in options]
    elif prog == "make":
        args = tuple(a for a in argv[1:] if not is_placeholder(a))
        code, err = make_dry_run(root, args)
        if code != 0:
            problems.append(f"make -n {' '.join(args)}: {err.splitlines()[-1] if err else f'exit {code}'}")
    elif prog == "pip":
        for tok in argv[1:]:
            m = re.match(r"^\.\[([\w,-]+)\]$", tok)
            for extra in (m.group(1).split(",") if m else []):
                if extra not in setup_extras(root):
                    problems.append(f"setup.cfg has no extra {extra!r} (has {sorted(setup_extras(root))})")
    elif prog == "bash" and len(argv) > 1 and not (root / argv[1]).is_file():
        problems.append(f"script {argv[1]!r} does not exist")
    return problems


def check_step(root: Path, step: Step) -> list[str]:
    if step.record:
        return []
    problems = [p for argv in step.argvs for p in check_command(root, argv, step.needs is not None)]
    if step.needs is not None and not step.needs:
        problems.append("'needs:' without saying what")
    return problems


def check_all(steps: list[Step], root: Path = ROOT) -> dict[str, list[str]]:
    """``{step.where: problems}`` for every step with a problem. The ``--help`` calls run two at a time."""
    scripts = {(s,) for step in steps for argv in step.argvs
               for s in [_script_and_args(argv)[0]] if s and s.startswith("tools/") and (root / s).is_file()}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda a: help_text(root, a), sorted(scripts)))
    out: dict[str, list[str]] = {}
    for step in steps:
        problems = check_step(root, step)
        if problems:
            out.setdefault(step.where, []).extend(problems)
    return out


# ----------------------------------------------------------------------------- run mode
@dataclasses.dataclass
class Outcome:
    step: Step
    status: str            # passed, failed, not run
    detail: str = ""
    seconds: float = 0.0


def _run_server(text: str, root: Path, log, timeout: float) -> tuple[bool, str]:
    """Start a command that serves until Ctrl-C; passed once it prints an http:// address."""
    proc = subprocess.Popen(["bash", "-c", f"exec {text}"], cwd=root, env=_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline, seen = time.time() + timeout, []
    try:
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            log.write(line)
            seen.append(line)
            if "http://" in line:
                return True, line.strip()
        return False, "".join(seen[-5:]) or f"exit {proc.poll()}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def run_steps(steps: list[Step], root: Path = ROOT, timeout: float = 3600,
              log_dir: Path | None = None, already_run: dict[str, str] | None = None) -> list[Outcome]:
    """Run the runnable steps in order (see the module docstring); one outcome per step.
    ``already_run``: ``{command: where}`` of commands that ran before (``make demo`` in a fresh clone)."""
    log_dir = log_dir or root / "work_dirs" / "doc_commands"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    failed_blocks: set[tuple[str, int]] = set()
    done: dict[str, str] = dict(already_run or {})
    for k, step in enumerate(steps):
        if step.kind != "runnable":
            why = f"needs: {step.needs}" if step.needs else f"synopsis ({', '.join(step.placeholders[:3])})"
            outcomes.append(Outcome(step, "not run", why))
            continue
        if (step.file, step.block) in failed_blocks:
            outcomes.append(Outcome(step, "not run", "an earlier command of its block failed"))
            continue
        if step.text in done:
            outcomes.append(Outcome(step, "not run", f"the same command ran at {done[step.text]}"))
            continue
        name = f"{k:03d}_{step.file.replace('/', '_')}_{step.line}.log"
        print(f"[{step.where}] {step.text}", flush=True)
        start = time.time()
        with open(log_dir / name, "w", encoding="utf-8") as log:
            log.write(f"$ {step.text}\n")
            log.flush()
            if step.until_interrupt:
                ok, detail = _run_server(step.text, root, log, min(timeout, 600))
            else:
                try:
                    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step.text], cwd=root,
                                          env=_env(root), stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
                    ok, detail = proc.returncode == 0, f"exit {proc.returncode}"
                except subprocess.TimeoutExpired:
                    ok, detail = False, f"timed out after {timeout:.0f} s"
        if not ok:
            tail = (log_dir / name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:]
            detail = f"{detail} ({log_dir / name}):\n      " + "\n      ".join(tail)
            failed_blocks.add((step.file, step.block))
        done[step.text] = step.where
        outcomes.append(Outcome(step, "passed" if ok else "failed", detail, time.time() - start))
        print(f"    {'passed' if ok else 'FAILED'} in {time.time() - start:.0f} s", flush=True)
    return outcomes


def fresh_clone(dest: Path, files: list[str], timeout: float) -> int:
    """Clone HEAD into ``dest``, run ``make demo`` there, then run the docs' runnable steps there."""
    if dest.exists():
        sys.exit(f"error: {dest} exists; give a new folder (the point is a fresh clone)")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    print(f"cloned into {dest}; make demo ...", flush=True)
    start = time.time()
    if subprocess.run(["make", "demo"], cwd=dest).returncode != 0:
        print("make demo failed", flush=True)
        return 1
    print(f"make demo: {time.time() - start:.0f} s", flush=True)
    paths = [dest / f for f in files] if files else doc_files(dest)
    outcomes = run_steps(extract_all(paths, dest), dest, timeout, already_run={"make demo": "the clone's setup"})
    return report(outcomes)


def report(outcomes: list[Outcome]) -> int:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
        if o.status == "failed":
            print(f"FAILED {o.step.where}: {o.step.text}\n    {o.detail}")
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 1 if counts.get("failed") else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check (and optionally run) the shell commands of the docs")
    p.add_argument("files", nargs="*", help="Markdown files (default: README.md and docs/**/*.md)")
    p.add_argument("--list", action="store_true", help="print every step and its kind, check nothing")
    p.add_argument("--run", action="store_true", help="also run the runnable steps here (after make demo)")
    p.add_argument("--fresh-clone", metavar="DIR", type=Path,
                   help="clone HEAD into DIR, make demo there, run the runnable steps there")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per step in the run modes")
    args = p.parse_args(argv)
    if args.fresh_clone:
        return fresh_clone(args.fresh_clone, args.files, args.timeout)
    files = [Path(f).resolve() for f in args.files] or doc_files()
    steps = extract_all(files)
    if args.list:
        for s in steps:
            print(f"{s.where:38s} {s.kind:9s} {s.text.splitlines()[0][:110]}"
                  + (f"  [needs: {s.needs}]" if s.needs else ""))
        return 0
    problems = check_all(steps)
    for where, lines in problems.items():
        for line in lines:
            print(f"{where}: {line}")
    kinds = {k: sum(s.kind == k for s in steps) for k in ("runnable", "synopsis", "needs")}
    print(f"{len(steps)} steps in {len(files)} files ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
          f"{sum(map(len, problems.values()))} problems")
    if problems:
        return 1
    return report(run_steps(steps)) if args.run else 0


if __name__ == "__main__":
    sys.exit(main())
