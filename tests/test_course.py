"""docs/course.md runs as written: its Python blocks in order, in one fresh process, in an empty
directory. Each lesson asserts its own result (a closed form, the theory against networks), so
a lesson whose claim stops holding fails here. (About a minute: the page is a course's worth
of runs at the smallest sizes whose claims hold over data and network draws, measured by a
review over 4-12 keys a lesson; the page's own keys are not tuned.)"""

import os
import pathlib
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_course_lessons_run(tmp_path):
    text = pathlib.Path(ROOT, "docs", "course.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    lessons = re.findall(r"^## (\d+)\. ", text, flags=re.M)
    assert len(blocks) == len(lessons) + 1 == 8          # the shared imports, then one block a lesson
    code = "\n".join(blocks)
    assert all("assert " in b for b in blocks[1:])       # every lesson checks what it shows
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for lesson in ("least norm", "lazy limit: |dW| / gamma0", "PASS spread", "learning times, flow",
                   "Boltzmann T", "gap t_test - t_train", "diffusion peaks at"):
        assert lesson in r.stdout, lesson
