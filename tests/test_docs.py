"""Documentation that runs: every command example in the project's Markdown files is executed
and its output compared, and every Python example runs to completion.

In a fenced block, a line `$ COMMAND` is a command (`s2emu` means `python -m emu`) and the lines
after it, up to the next `$` line, are its output (stdout and stderr together, as a terminal
shows them). In expected output, `…` inside a line matches any text, and a line that is only
`…` matches any number of lines. A command ending in `&` runs in the background: the next
command starts once it printed its first line, and it must exit 0 by the end of the block.
A block right after `<!-- doc-test: setup -->` is the set-up the CI script runs itself
(`.ci/run`); `python` blocks are run as scripts from the repository root.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

DOCS = ["README.md", "guests/README.md", "tests/fuzz/README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NEEDS = {"gdb-multiarch": "gdb-multiarch", "make": "arm-none-eabi-gcc",
         "qemu-system-arm": "qemu-system-arm"}


def blocks():
    for doc in DOCS:
        path = os.path.join(ROOT, doc)
        if not os.path.exists(path):
            continue
        text = open(path, encoding="utf-8").read()
        for m in FENCE.finditer(text):
            lang, body = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
            if before[0].strip() == "<!-- doc-test: setup -->":
                continue
            if lang == "python":
                yield pytest.param("python", body, id=f"{doc}:{line}")
            elif body.lstrip().startswith("$ "):
                yield pytest.param("console", body, id=f"{doc}:{line}")


def commands(body: str):
    """[(command, [expected lines])] of a console block."""
    out = []
    for line in body.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def shell(cmd: str) -> str:
    if cmd.startswith("s2emu "):
        cmd = f"{shlex.quote(sys.executable)} -m emu " + cmd[len("s2emu "):]
    return cmd


def matches(expected: list[str], actual: list[str]) -> bool:
    """`…` in a line matches any text; a line that is only `…`, any number of lines."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "…":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(p) for p in head.split("…"))
    return re.fullmatch(pattern, actual[0]) is not None and matches(rest, actual[1:])


def skip_unless_tools(cmds) -> None:
    for cmd, _ in cmds:
        tool = NEEDS.get(cmd.split()[0])
        if tool and shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@pytest.mark.parametrize("kind,body", list(blocks()))
def test_documented_example(kind, body, tmp_path):
    if kind == "python":
        script = tmp_path / "example.py"
        script.write_text(body)
        p = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return
    cmds = commands(body)
    skip_unless_tools(cmds)
    background = []
    try:
        for cmd, expected in cmds:
            if cmd.endswith("&"):
                p = subprocess.Popen(shell(cmd[:-1]), shell=True, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                p.stdout.readline()                    # it is up (e.g. "listening on ...")
                background.append(p)
                continue
            p = subprocess.run(shell(cmd), shell=True, cwd=ROOT, text=True, timeout=300,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            actual = p.stdout.rstrip("\n").split("\n") if p.stdout.strip() else []
            assert matches(expected, actual), (
                f"$ {cmd}\n--- documented\n" + "\n".join(expected) +
                "\n--- actual\n" + "\n".join(actual))
        for p in background:
            assert p.wait(timeout=60) == 0
    finally:
        for p in background:
            if p.poll() is None:
                p.kill()


def test_the_readme_test_command_is_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    setup = re.search(r"<!-- doc-test: setup -->\n```sh\n(.*?)```", readme, re.S).group(1)
    test_cmd = setup.strip().splitlines()[-1].split("&&")[-1].split("#")[0].strip()
    assert test_cmd in ci


@pytest.mark.parametrize("doc", DOCS)
def test_docs_stand_alone(doc):
    """The project's documents do not point at files a clone lacks."""
    path = os.path.join(ROOT, doc)
    if not os.path.exists(path):
        pytest.skip("not written")
    text = open(path, encoding="utf-8").read()
    assert "../shared" not in text and "DESIGN.md" not in text
