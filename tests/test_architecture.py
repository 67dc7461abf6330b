"""The layers hold: no import runs up from kernel < catalogs < pipeline < datagen < models < flows, benchmarks
< dsmar, and no modules import each other in a circle (scripts/import_graph.py, docs/architecture.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "import_graph.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_package_graph_keeps_its_layers_and_has_no_cycle():
    result = _check(ROOT)
    assert result.returncode == 0, result.stdout


def test_the_check_names_an_import_that_runs_up_and_a_cycle(tmp_path):
    for package in ("kernel", "catalogs", "pipeline", "datagen", "models", "flows", "benchmarks", "dsmar"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "import_graph.py").write_text(SCRIPT.read_text())
    (tmp_path / "models" / "api.py").write_text("x = 1\n")
    (tmp_path / "kernel" / "config.py").write_text("def f():\n    from models.api import x\n")
    (tmp_path / "pipeline" / "a.py").write_text("from pipeline import b\n")
    (tmp_path / "pipeline" / "b.py").write_text("import pipeline.a\n")
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "kernel.config imports models.api: models is not below kernel" in result.stdout
    assert "cycle: pipeline.a <-> pipeline.b" in result.stdout
