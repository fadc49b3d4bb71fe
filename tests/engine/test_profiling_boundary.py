"""The serving engine does not load the profiling package (engine/profiling/)."""

import subprocess
import sys


def test_serving_modules_do_not_import_profiling():
    code = (
        "import sys\n"
        "import adaptive_sarathi.engine.factory, adaptive_sarathi.engine.engine\n"
        "import adaptive_sarathi.engine.distributed.executor, adaptive_sarathi.engine.distributed.rank_state\n"
        "import adaptive_sarathi.server.server, adaptive_sarathi.llm\n"
        "print(sorted(m for m in sys.modules if m.startswith('adaptive_sarathi.engine.profiling')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
