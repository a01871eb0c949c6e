"""Generations: an answer from the upstream to the sockets and the database.

- ``turns``: the rows a send, retry or edit creates (one transaction), as a ``Turn``;
- ``records``: answers in the database (progress, final saves that retry, saved views);
- ``state``: one answer in flight (``Generation``);
- ``pipeline``: reading the upstream, publishing frames, the final save and frame;
- ``pacing``: the coalescing window, from the event loop's lag;
- ``progress``: periodic saves of every growing answer in one call;
- ``control``: what this worker hears from the others (Stop, snapshots, presence, frames);
- ``service``: the one door for consumers (``get_service``);
- ``registry``: which answers this process runs, readable from views' threads;
- ``shutdown``: finishing and saving the answers in flight on SIGTERM.
"""
