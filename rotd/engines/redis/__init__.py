"""The Redis and Valkey engine: ACL users rotated on redis-py's asyncio client.

This package owns everything rotd says to a Redis or Valkey server: logging in on every node
of a database (Redis does not replicate ACLs, so each node is told each change; ``nodes``),
giving a user its passwords as SHA-256 hashes (``#<hex>`` adds, ``!<hex>`` removes, so a plain
password never reaches the server in an ACL command, ``SLOWLOG`` or ``MONITOR``; ``acl``),
mirroring a user's rules onto its clone and persisting each change the way the node loads its
users (``ACL SAVE`` for an ACL file, ``CONFIG REWRITE`` for a config file; neither: refused
before anything changes; ``session``), and a rotation lock kept as a key (``lock``).
Arguments go to the server as separate bulk strings, so nothing is ever quoted into a
command; user names are still checked (no blanks, no control characters), since an ACL file
could not hold them.
"""

from rotd.engines.redis.acl import Persistence, password_hash
from rotd.engines.redis.session import RedisEngine, RedisSession

__all__ = ["Persistence", "RedisEngine", "RedisSession", "password_hash"]
