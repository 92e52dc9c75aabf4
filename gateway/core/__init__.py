"""The replica's core: what one replica does with positions, statuses, metrics, events, commands
and other replicas' messages. It knows no sockets and no web framework: bots and viewers are
links (`gateway.core.links`), the store, bus, cache, presence and history are ports, and
everything is built by `gateway.compose` and passed in. Nothing here imports aiohttp or
websockets (tests/unit/test_layers.py checks it).
"""
