"""The contract every service of the order tracking system shares: what travels and what it means.

The wire models (`models`), the Kafka events (`events`), the lifecycle of an order
(`lifecycle`), the names of the Redis keys (`keys`) and every setting (`settings`). It is plain
data and rules: it imports none of FastAPI, Starlette, uvicorn, redis, aiokafka, httpx or PyJWT
(tests/static/test_package_deps.py holds it to that), so any service, tool or another team's
consumer can depend on it alone.
"""
