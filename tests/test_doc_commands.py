"""The shell commands of README.md and docs/: extracted, checked and (slow) run as a new user would.

``doc_commands`` (tests/doc_commands.py) holds the extractor, the checks and the run mode; its
docstring has the conventions the docs follow (placeholders, ``# needs: ...``, ``until Ctrl-C``).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import doc_commands as dc
from doc_commands import ROOT, check_command, extract, extract_all, run_steps

MARKDOWN = '''# A page

```bash
make demo   # the demo
python tools/train.py configs/lisa/lisa_tiny_synthref.py \\
    --work-dir W --cfg-options a.b=1     # W is a placeholder
# needs: a GPU and real weights
python tools/train.py configs/x.py --cfg-options model.lmm.pretrained=/ckpt/llava
python tools/test.py configs/x.py /ckpt/model.pth

python tools/plot_curves.py work_dirs/run   # after the blank line: runnable again
python tools/demo.py c.py ck.pth   # serves until Ctrl-C
for split in train val; do
  python tools/make_pools.py p.py --split $split --out x/$split.jsonl
done
```

```text
python tools/not_a_command.py
```

```python
print("not shell")
```

<!-- doc-commands: record -->

```bash
python tools/train.py configs/gone.py
```
'''


def _page(tmp_path: Path, text: str = MARKDOWN) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    page = tmp_path / "docs" / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_extract_steps_kinds_and_markers(tmp_path):
    steps = extract(_page(tmp_path), tmp_path)
    got = [(s.line, s.kind, s.text.split()[1] if len(s.text.split()) > 1 else s.text) for s in steps]
    assert got == [
        (4, "runnable", "demo"),
        (5, "synopsis", "tools/train.py"),
        (8, "needs", "tools/train.py"),
        (9, "needs", "tools/test.py"),
        (11, "runnable", "tools/plot_curves.py"),
        (12, "runnable", "tools/demo.py"),
        (13, "runnable", "split"),
        (29, "record", "tools/train.py"),
    ]
    train = steps[1]
    assert train.text == "python tools/train.py configs/lisa/lisa_tiny_synthref.py --work-dir W --cfg-options a.b=1"
    assert train.placeholders == ["W"]
    assert steps[2].needs == steps[3].needs == "a GPU and real weights"
    assert steps[5].until_interrupt and not steps[4].until_interrupt
    loop = steps[6]
    assert loop.text.count("\n") == 2 and loop.text.endswith("done")
    assert loop.argvs == [["python", "tools/make_pools.py", "p.py", "--split", "$split", "--out", "x/$split.jsonl"]]
    assert {s.block for s in steps[:7]} == {3} and steps[7].block == 28


def test_a_needs_mark_says_what(tmp_path):
    steps = extract(_page(tmp_path, "```bash\n# needs:\nmake demo\nmake test   # needs:\n```\n"), tmp_path)
    assert [s.kind for s in steps] == ["needs", "needs"]
    assert [dc.check_step(ROOT, s) for s in steps] == [["'needs:' without saying what"]] * 2


@pytest.mark.parametrize("token, placeholder", [
    ("CONFIG", True), ("W/iter_600.pth", True), ("randomness.seed=S", True), ("[--resume]", True),
    ("val|test]", True), ("{lisa,read}", True), ("<change>", True), ("...", True), ("k=v", True),
    ("CONFIG=configs/x.py", False), ("configs/lisa/lisa_tiny_synthref.py", False), ("--iters", False),
    ('$(cat work_dirs/x/last_checkpoint)', False), ("model.lmm.trainable_modules=[lm_head,embed_tokens]", False),
    ("as configured", False), ("seg/gIoU", False),
])
def test_placeholders(token, placeholder):
    assert dc.is_placeholder(token) is placeholder


@pytest.mark.parametrize("command, expected", [
    ("python tools/train.py configs/lisa/lisa_tiny_synthref.py --work-dri x", "has no option '--work-dri'"),
    ("python tools/nope.py --x", "script 'tools/nope.py' does not exist"),
    ("python tools/train.py configs/lisa/nope.py", "config 'configs/lisa/nope.py' does not exist"),
    ("python tools/train.py configs/lisa/lisa_tiny_synthref.py --cfg-options train_cfg.max_iter=3",
     "has no key 'max_iter'; did you mean 'train_cfg.max_iters'?"),
    ("python tools/train.py configs/lisa/lisa_tiny_synthref.py --cfg-options param_scheduler.9.end=3",
     "'param_scheduler.9.end': param_scheduler is a list of 2, no index '9'"),
    ("python tools/make_pools.py configs/_base_/proposers/sam_tiny_amg.py --dataset-config "
     "configs/ras/ras_tiny_own-data.py --dataset-cfg-options data_rot=x --out p.jsonl",
     "--dataset-cfg-options 'data_rot': the config has no key 'data_rot'"),
    ("make no-such-target", "make -n no-such-target: make: *** No rule to make target 'no-such-target'"),
    ('pip install -e ".[no-such-extra]"', "setup.cfg has no extra 'no-such-extra'"),
    ("reseg plugins --jsn", "reseg plugins has no option '--jsn'"),
    ("curl https://example.org", "unknown command 'curl'"),
])
def test_static_checks_find_what_is_wrong(command, expected):
    problems = [p for argv in dc._simple_commands(dc._tokens(command)) for p in check_command(ROOT, argv)]
    assert len(problems) == 1 and expected in problems[0], problems


def test_static_checks_accept_right_commands():
    ok = [
        "python tools/train.py configs/lisa/lisa_tiny_synthref.py --work-dir w --cfg-options train_cfg.max_iters=3 "
        "param_scheduler.1.end=3",
        # not written in the config, but an argument of the head's type: accepted
        "python tools/train.py configs/lisa/lisa_tiny_synthref.py --cfg-options model.head.seg_convention=at",
        # a sub-key of an option the config leaves None (LoRA off): mmengine fills it in
        "python tools/train.py configs/lisa/lisa_tiny_synthref.py --cfg-options model.lmm.lora.r=8",
        "make demo CONFIG=configs/read/read_tiny_synthref.py",
        'pip install -e ".[deepspeed]"',
        "reseg list heads '*Seg*'",
    ]
    for command in ok:
        argvs = dc._simple_commands(dc._tokens(command))
        assert [p for argv in argvs for p in check_command(ROOT, argv)] == [], command


def test_every_doc_command_passes_the_checks():
    """README.md and docs/: every script, option, make target, extra, config and config key exists."""
    steps = extract_all()
    assert len(steps) > 100 and {s.file for s in steps} >= {"README.md", "docs/getting_started.md"}
    assert dc.check_all(steps) == {}


def test_no_doc_command_needs_unmarked_outside_files():
    """A command that names an absolute path (real weights, datasets) is marked ``# needs: ...`` or
    holds a placeholder, so the run mode never silently fails on it."""
    unmarked = [s.where for s in extract_all() if s.kind == "runnable"
                and any(t.startswith("/") for argv in s.argvs for t in argv)]
    assert unmarked == []


def test_run_mode_order_failures_duplicates_and_servers(tmp_path):
    text = '''```bash
python -c "print('one')"
python -c "import sys; sys.exit(3)"
python -c "print('after a failure: not run')"
```

```bash
python -c "print('one')"
python tools/x.py CONFIG
python -c "print('serving at http://127.0.0.1:1/', flush=True); import time; time.sleep(120)"   # until Ctrl-C
```
'''
    steps = extract(_page(tmp_path, text), tmp_path)
    start = time.time()
    outcomes = run_steps(steps, tmp_path, timeout=60, log_dir=tmp_path / "logs")
    assert time.time() - start < 60     # the server was interrupted once it printed its address
    assert [(o.step.line, o.status) for o in outcomes] == [
        (2, "passed"), (3, "failed"), (4, "not run"), (8, "not run"), (9, "not run"), (10, "passed")]
    assert "exit 3" in outcomes[1].detail
    assert outcomes[2].detail == "an earlier command of its block failed"
    assert outcomes[3].detail == "the same command ran at docs/page.md:2"
    assert outcomes[4].detail.startswith("synopsis (CONFIG")
    assert "http://127.0.0.1:1/" in outcomes[5].detail
    assert "one" in (tmp_path / "logs" / "000_docs_page.md_2.log").read_text()
    assert dc.report(outcomes) == 1


@pytest.mark.slow
def test_doc_commands_run_in_a_fresh_clone_after_make_demo(tmp_path):
    """The done-means of a newcomer's first day: clone, ``make demo``, then every runnable command of
    README.md and docs/ as written (hours on 2 CPU cores: the benchmark recipes train several models)."""
    assert dc.fresh_clone(tmp_path / "clone", [], timeout=3600) == 0


def test_the_docs_stand_alone():
    """Issue 29.13: every relative link of README.md and docs/ reaches a file of the repository, and no
    page sends the reader to the design notes, which are not part of it (docs/references.md says what
    the cited notes cover)."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken, outside = [], []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
        for needle in ("DESIGN.md", "specs/", "/work/shared"):
            if needle in text:
                outside.append(f"{page.relative_to(ROOT)}: {needle}")
    assert len(pages) > 15 and broken == [] and outside == []
