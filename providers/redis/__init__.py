"""Redis providers (``REDIS_URL``): session locks shared by replicas
(:mod:`providers.redis.locks`) and the conversation bus over pub/sub
(:mod:`providers.redis.bus`)."""
