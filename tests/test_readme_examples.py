"""The README's "How to extend" examples, run as written, so that the README cannot drift.

Each `###` example of that section is a list of fenced blocks, taken in order:
- a Python block whose first line is ``# <name>.py, in the project root`` is a file the reader
  writes: it is written into the folder the commands run in;
- a Python block whose first line is ``# in mura_lib/<path>.py`` shows library code: it must
  appear in that file exactly as shown;
- a bash block is run with ``bash -e`` in a fresh folder that holds a link to the bundled
  sample (``data_sample/``), with the project's ``mura`` on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mura_lib.config import DATA_SAMPLE_DIR, PROJ_ROOT

README = PROJ_ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def extension_examples() -> dict[str, list[tuple[str, str]]]:
    """{example title: [(language, code), ...]} of the README's "How to extend" section."""
    text = README.read_text()
    section = text.split("\n## How to extend\n", 1)[1].split("\n## ", 1)[0]
    examples = {}
    for chunk in section.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        examples[title.strip()] = _BLOCK.findall(body)
    return examples


EXAMPLES = extension_examples()


def test_the_section_has_the_five_examples():
    assert len(EXAMPLES) == 5, list(EXAMPLES)
    assert all(any(lang == "bash" for lang, _ in blocks) for blocks in EXAMPLES.values())


@pytest.mark.slow
@pytest.mark.parametrize("title", list(EXAMPLES))
def test_example_runs_as_written(title, tmp_path, tmp_path_factory):
    (tmp_path / "data_sample").symlink_to(DATA_SAMPLE_DIR)
    cache = tmp_path_factory.getbasetemp() / "readme_image_cache"  # shared by the examples
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MURA_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": "1",
    }
    for lang, code in EXAMPLES[title]:
        first = code.splitlines()[0]
        if lang == "python" and first.startswith("# in mura_lib/"):
            library_file = PROJ_ROOT / first.removeprefix("# in ").strip()
            shown = code.split("\n", 1)[1]
            assert shown in library_file.read_text(), f"{library_file} no longer holds:\n{shown}"
        elif lang == "python":
            name = re.match(r"# (\S+\.py), in the project root", first)
            assert name, f"a Python block of {title!r} names no file: {first!r}"
            (tmp_path / name.group(1)).write_text(code)
        elif lang == "bash":
            done = subprocess.run(
                ["bash", "-e", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{title}:\n{code}\n{done.stdout}\n{done.stderr}"
