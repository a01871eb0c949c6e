"""The live path: how an answer's frames reach the sockets that show it.

- ``protocol``: every channel-layer message and group name, typed, in one place;
- ``hub``: this worker's sockets by conversation (frames are delivered to them directly) and
  which other workers follow which conversations (frames cross the channel layer only for them);
- ``follower``: one socket's side of the protocol: frame numbers, gaps refilled from snapshots,
  silence checked against the database, a socket that cannot keep up;
- ``jobs``: a follower's slower work (refills, database checks), one job at a time;
- ``ports``: what a follower needs of its socket and of the generation service;
- ``socket``: how many bytes a socket has queued but not yet sent (Daphne's transport);
- ``compression``: permessage-deflate for Daphne's websockets;
- ``origin``: the handshake's origin check (scheme, host and port);
- ``inbound``: how many messages a socket may send (a flood gets one alert, then a close);
- ``consumer``: the base of both pages' socket consumers.
"""
