"""The README's Python page runs as it stands: its code block is executed from a copy of the repository's
recipes, so a change to the API that breaks the page fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_page() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's Python page has one code block"
    return blocks[0]


def test_the_readme_python_page_runs(tmp_path: Path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    script = tmp_path / "page.py"
    script.write_text(python_page())
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"real\+synthetic vs real: [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] ", done.stdout)
    assert "30 synthetic images;" in done.stdout and "'weight'" in done.stdout
    assert (tmp_path / "runs" / "python-api" / "model" / "model_index.json").exists()
