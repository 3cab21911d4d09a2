"""ingest's C modules under AddressSanitizer and UBSan: a parser of hostile input must
neither read past a message nor lean on undefined behaviour, whatever bytes come.

Each module is compiled again with the sanitizers and loaded in a child process (their
runtime has to be preloaded) in place of the installed one; the byte-level tests then
run against it: for native_v1.c (envelopes), test_envelope_decoder.py's vectors, every
cut of a plain envelope and random bytes changed in it; for native_mqtt.c (packets),
test_packet_fuzz.py's comparisons with the Python loop: random streams, cuts, near-valid
packets and random bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import importlib.machinery, importlib.util, sys
name, path, tests, selected = sys.argv[1:5]
spec = importlib.util.spec_from_file_location(
    name, path, loader=importlib.machinery.ExtensionFileLoader(name, path))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[name] = module
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "-x", tests, "-k", selected])
assert sys.modules[name].__file__ == path, sys.modules[name].__file__
sys.exit(code)
"""


@pytest.mark.parametrize("module, tests, selected", [
    ("native_v1", "test_envelope_decoder.py", "vector or cut or changed"),
    ("native_mqtt", "test_packet_fuzz.py", "c_run or random_bytes"),
])
def test_the_c_module_under_sanitizers(tmp_path: Path, module: str, tests: str,
                                        selected: str) -> None:
    cc = shutil.which("gcc")
    assert cc, "gcc is needed (make installs it): ingest's C modules are compiled at install"
    built = tmp_path / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=all", "-shared", "-fPIC",
                    f"-I{sysconfig.get_paths()['include']}", str(ROOT / "ingest" / f"{module}.c"),
                    "-o", str(built)], check=True)
    runtimes = [subprocess.run([cc, f"-print-file-name={lib}"], capture_output=True, text=True,
                               check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    # PYTHONMALLOC=malloc: each payload its own allocation, so reading past one is caught
    # (in pymalloc's arenas the sanitizer sees no boundary)
    env = {**os.environ, "LD_PRELOAD": ":".join(runtimes), "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, f"fleetpulse.ingest.{module}", str(built),
         str(ROOT / "tests" / tests), selected],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "runtime error" not in report and "AddressSanitizer" not in report, report
    assert " passed" in proc.stdout, report
