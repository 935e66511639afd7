"""A longer fuzz run of the compiled OTLP decoder, built with AddressSanitizer and UBSan.

The suite (tests/test_otlp_columns.py) checks a few hundred generated requests against the Python
decoder on every run. This runs many more, on a build of the extension that stops at the first
out-of-bounds read, use after free or undefined behaviour, plus random byte strings:

    .venv/bin/python tests/fuzz_otlp_columns.py 20000

It compiles `pipeline/_otlp_columns.c` with gcc into a temporary folder and runs itself again with
the sanitizer runtime preloaded and Python on plain malloc, so that a read past a request's bytes is
seen (Python is not built with it). Not part of `make test`: minutes.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "pipeline" / "_otlp_columns.c"


def build(into: Path) -> Path:
    out = into / "_otlp_columns.so"
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(SOURCE), "-o", str(out)], check=True)
    return out


def fuzz(library: str, examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = importlib.util.spec_from_file_location("_otlp_columns", library)
    assert spec is not None and spec.loader is not None
    sanitized = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sanitized)
    sys.path.insert(0, str(ROOT))
    from spanpipe import otlp_columns
    from tests.test_otlp_columns import plain, requests, same_or_left

    otlp_columns._otlp_columns = sanitized

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests(), st.data())
    def one(req, data) -> None:  # type: ignore[no-untyped-def]
        if data.draw(st.booleans()):
            plain(req, keep_repeated_keys=data.draw(st.booleans()))
        body = bytearray(req.SerializeToString())
        if body and data.draw(st.booleans()):
            for _ in range(data.draw(st.integers(1, 6))):
                body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
        if body and data.draw(st.booleans()):
            body = body[:data.draw(st.integers(0, len(body)))]
        same_or_left(bytes(body))

    one()
    rnd = random.Random(1)
    for _ in range(examples * 4):
        sanitized.decode(rnd.randbytes(rnd.randint(0, 300)))
    print(f"{examples:,} generated requests and {examples * 4:,} random byte strings: "
          "every answer the Python decoder's or left to it, no sanitizer report")


def main() -> int:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    if "SPANPIPE_FUZZ_LIBRARY" in os.environ:
        fuzz(os.environ["SPANPIPE_FUZZ_LIBRARY"], examples)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        library = build(Path(tmp))
        runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        env = {**os.environ, "SPANPIPE_FUZZ_LIBRARY": str(library), "LD_PRELOAD": runtime,
               "PYTHONMALLOC": "malloc",
               "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
        return subprocess.run([sys.executable, __file__, str(examples)], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
