"""The library stands alone: importing any of it loads no Airflow, and executors get only the library."""

import json
import subprocess
import sys
import zipfile

from cfmodel.spark import build_code_zip


def test_importing_every_library_module_imports_no_airflow():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import cfmodel\n"
        "names = [m.name for m in pkgutil.walk_packages(cfmodel.__path__, 'cfmodel.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'modules': names, 'airflow': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('airflow', 'cfrec_airflow'))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(loaded["modules"]) > 40 and "cfmodel.pipeline" in loaded["modules"]
    assert loaded["airflow"] == []


def test_the_code_shipped_to_executors_is_the_library_alone(tmp_path):
    with zipfile.ZipFile(build_code_zip(tmp_path)) as archive:
        names = archive.namelist()
    assert "cfmodel/pipeline.py" in names and "cfmodel/scoring/recommend.py" in names
    assert all(name.startswith("cfmodel/") for name in names)
