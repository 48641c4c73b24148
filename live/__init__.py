"""Live status: pages learn of changes through server-sent events fed by the shared cache.

`live.services.publish(channel)` (any process) writes a new version token for the channel in the
shared cache; `live.streams` (one poller per web process) reads the versions of the channels open
in that process and tells each open stream when its channel's token changed; `live.views` answers
the streams (`/live/orders/<uuid>/`, `/live/ops/`) with the same visibility rules as the pages.
"""
