"""Django's Redis cache, keeping one client per connection pool.

The stock backend builds a new `redis.Redis` client (with its ~170 response callbacks) on every cache call,
about 0.2 ms of CPU each; the telemetry paths make two or three cache calls per request. Clients are
thread-safe and their pools reset themselves after a fork, so one per pool is enough.
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = self._client(connection_pool=self._get_connection_pool(write))
        return client


class AgentWatchRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
