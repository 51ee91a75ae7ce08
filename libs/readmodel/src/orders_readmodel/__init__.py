"""The read model in Redis: the one place its layout is written.

Every key the services keep in Redis is written here: the orders, their histories and indexes
through the Redis Functions library `orders.lua` (`store`), the update stream that live
clients follow and the status relay publishes (`stream`), and the group commit that packs
concurrent calls into one round trip (`batching`). Services, `make rebuild` and the relay reach
Redis through it, never around it.
"""
