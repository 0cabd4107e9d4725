"""llama-cpp-python's OpenAI-compatible server, with lmpc's extra-buffer decision applied.

    python -m lmpc.runtime.models.llama_server --model m.gguf --port 8000 [server options]

takes exactly the arguments of `python -m llama_cpp.server`, which has no setting for
llama.cpp's use_extra_bufts: on CPUs with AMX its models crash on the first decode. This
launcher decides as the in-process models do (LMPC_LLAMA_EXTRA_BUFFERS, else auto: off when
the CPU has AMX), prints the decision on stderr, and applies it to every model the server loads.
"""

from __future__ import annotations

import sys

from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.models.llama_system import extra_buffers_for, set_process_extra_buffers

PROG = "python -m lmpc.runtime.models.llama_server"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        decision = extra_buffers_for("auto")
        set_process_extra_buffers(decision.enabled)
    except LmpcRuntimeError as e:
        print(f"lmpc: error: {e}", file=sys.stderr)
        return 2
    print(f"lmpc: llama.cpp extra buffer types {decision.word} ({decision.reason})", file=sys.stderr, flush=True)
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = [PROG, *args]  # the server parses sys.argv itself
    server_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
