"""The rooms' import boundaries (ARCHITECTURE.md) and no import cycles, read from the source."""

import subprocess
import sys
from pathlib import Path

from tests.support.import_graph import crossings, cycles, import_graph

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "buffer": {"actors", "learner", "weights", "launch"},
    "rewards": {"actors", "buffer", "learner", "weights", "launch"},
    "weights": {"actors", "learner", "buffer", "launch"},
    "actors": {"learner", "launch"},
    "learner": {"actors", "launch"},
}


def test_no_room_imports_what_it_must_not():
    assert crossings(import_graph(ROOT), FORBIDDEN) == []


def test_nothing_outside_launch_imports_launch():
    graph = import_graph(ROOT)
    assert [f"{m} imports {t}" for m, ts in sorted(graph.items()) for t in sorted(ts)
            if t.split(".")[0] == "launch" and m.split(".")[0] != "launch"] == []


def test_there_is_no_import_cycle():
    assert cycles(import_graph(ROOT)) == []


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph(ROOT)
    assert "buffer.wire.schema" in graph["buffer"]  # from buffer.wire.schema import ...
    assert "weights.receiver" in graph["actors.rollout_actor"]
    assert "learner.learner" in graph["launch.cluster"]  # a lazy import inside a function counts


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_added_on_purpose_is_found(tmp_path):
    _package(tmp_path, {"buffer/__init__.py": "", "buffer/a.py": "from buffer.b import f\n",
                        "buffer/b.py": "def f():\n    from buffer import c\n",
                        "buffer/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
                        "buffer/d.py": "import buffer.a\n"})
    assert cycles(import_graph(tmp_path, rooms=("buffer",))) == [["buffer.a", "buffer.b", "buffer.c"]]


def test_a_crossing_added_on_purpose_is_found(tmp_path):
    _package(tmp_path, {"buffer/__init__.py": "", "buffer/x.py": "import actors.engine\n",
                        "actors/__init__.py": "", "actors/engine.py": "from buffer import x\n"})
    graph = import_graph(tmp_path, rooms=("buffer", "actors"))
    assert crossings(graph, FORBIDDEN) == ["buffer.x imports actors.engine"]
    assert cycles(graph) == [["actors.engine", "buffer.x"]]


def test_importing_buffer_does_not_import_torch():
    code = "import sys, buffer, buffer.net.insert_client, buffer.core.shard; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
