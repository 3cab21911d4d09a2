"""ingest/native_v1.c under AddressSanitizer and UBSan: a parser of hostile input must
neither read past a message nor lean on undefined behaviour, whatever bytes come.

The module is compiled again with the sanitizers and loaded in a child process (their
runtime has to be preloaded) in place of the installed one; the byte-level tests of
test_envelope_decoder.py then run against it: every vector, every cut of a plain
envelope and random bytes changed in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import importlib.machinery, importlib.util, sys
spec = importlib.util.spec_from_file_location(
    "fleetpulse.ingest.native_v1", sys.argv[1],
    loader=importlib.machinery.ExtensionFileLoader("fleetpulse.ingest.native_v1", sys.argv[1]))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["fleetpulse.ingest.native_v1"] = module
import fleetpulse.ingest.native_columns as nc
assert nc.native_v1.__file__ == sys.argv[1], nc.native_v1.__file__
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-x", sys.argv[2], "-k", sys.argv[3]]))
"""


def test_the_c_decoder_under_sanitizers(tmp_path: Path) -> None:
    cc = shutil.which("gcc")
    assert cc, "gcc is needed (make installs it): ingest's decoder is compiled at install"
    built = tmp_path / f"native_v1{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=all", "-shared", "-fPIC",
                    f"-I{sysconfig.get_paths()['include']}", str(ROOT / "ingest" / "native_v1.c"),
                    "-o", str(built)], check=True)
    runtimes = [subprocess.run([cc, f"-print-file-name={lib}"], capture_output=True, text=True,
                               check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    # PYTHONMALLOC=malloc: each payload its own allocation, so reading past one is caught
    # (in pymalloc's arenas the sanitizer sees no boundary)
    env = {**os.environ, "LD_PRELOAD": ":".join(runtimes), "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(built), str(ROOT / "tests" / "test_envelope_decoder.py"),
         "vector or cut or changed"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "runtime error" not in report and "AddressSanitizer" not in report, report
    assert " passed" in proc.stdout, report
