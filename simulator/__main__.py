"""Run the simulator standalone under Daphne: ``python -m simulator --port 8001``.

It serves both protocols: OpenAI-compatible ``{prefix}/v1/chat/completions`` and DashScope's
native ``{prefix}/api/v1/services/aigc/text-generation/generation``.

Defaults reach the app through ``SIM_*`` environment variables (set here before the app module
is imported), so the module-level ``simulator.app:application`` seen by any other ASGI server
started from this environment behaves the same.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Upstream simulator for DashScope: OpenAI-compatible chat completions "
        "(/v1/chat/completions) and the native protocol "
        "(/api/v1/services/aigc/text-generation/generation, SSE with 'X-DashScope-SSE: enable').",
        epilog="Per request, a 'sim' object in the body (native: also parameters.sim) or a "
        "'#sim key=value ...' line in the last user message sets: seed ttft tps tokens lang "
        "fault (400 401 403 429 500 503 eof midstream_error stall slow_headers) midstream_kind "
        "(data_inspection_failed 429 500 503) fault_after "
        "fault_times (the fault hits only the first N requests of a message) retry_after "
        "delay fault_framing (auto http sse200 sse_status) fragment keepalive (also pings "
        "through a stall) crlf weird stamp shuffle coalesce think (reasoning tokens; 0 = "
        "none) reasoning_field (reasoning_content reasoning reasoning_text think) final_empty "
        "(native: an empty last event) huge (one token of N characters) fence (an unclosed code "
        "fence of N characters) math (a formula in TeX; on when the prompt asks about one).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (8001; 0 = any free)")
    parser.add_argument("--prefix", default="", help="URL prefix to strip, e.g. /simulator")
    parser.add_argument("--ttft", type=float, help="default seconds to first token (SIM_TTFT)")
    parser.add_argument("--tps", type=float, help="default tokens per second (SIM_TPS)")
    parser.add_argument("--tokens", type=int, help="default answer length in tokens (SIM_TOKENS)")
    parser.add_argument("--seed", type=int, help="default seed (SIM_SEED)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (SIM_API_KEY)")
    parser.add_argument("--models", help="comma-separated names for /v1/models (SIM_MODELS)")
    parser.add_argument(
        "--stream-only-models",
        metavar="PATTERNS",
        help="comma-separated shell-style model patterns that refuse stream:false, '' for none "
        "(SIM_STREAM_ONLY_MODELS; default qwq*,qwen3-*,*-thinking*)",
    )
    parser.add_argument(
        "--thinking-models",
        metavar="PATTERNS",
        help="comma-separated shell-style model patterns that think by default (about 60 "
        "reasoning tokens; enable_thinking and the think option override), '' for none "
        "(SIM_THINKING_MODELS; default qwq*,qwen3-*,*-thinking*,deepseek-r1*)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other default option, e.g. --set keepalive=1 (SIM_OPTIONS)",
    )
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="Daphne log verbosity")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Export the defaults, bind, print the base URL once listening, and serve forever."""
    args = _parse_args(argv)
    env = {
        "SIM_TTFT": args.ttft,
        "SIM_TPS": args.tps,
        "SIM_TOKENS": args.tokens,
        "SIM_SEED": args.seed,
        "SIM_API_KEY": args.api_key,
        "SIM_MODELS": args.models,
        "SIM_STREAM_ONLY_MODELS": args.stream_only_models,
        "SIM_THINKING_MODELS": args.thinking_models,
        "SIM_PREFIX": args.prefix or None,
    }
    for name, value in env.items():
        if value is not None:
            os.environ[name] = str(value)
    if args.set:
        os.environ["SIM_OPTIONS"] = " ".join([os.environ.get("SIM_OPTIONS", ""), *args.set])

    logging.basicConfig(
        level=logging.INFO if args.verbosity else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    # daphne.server installs Twisted's asyncio reactor on import, so import it before the app.
    from daphne.server import Server

    from simulator.app import application

    server: Server

    def ready() -> None:
        host, port = (
            server.listening_addresses[0]
            if server.listening_addresses
            else (
                args.host,
                args.port,
            )
        )
        print(
            f"simulator listening on http://{host}:{port}{args.prefix.rstrip('/')}/v1", flush=True
        )

    interface = args.host.replace(":", r"\:")
    server = Server(
        application,
        endpoints=[f"tcp:port={args.port}:interface={interface}"],
        verbosity=args.verbosity,
        ready_callable=ready,
    )
    server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
