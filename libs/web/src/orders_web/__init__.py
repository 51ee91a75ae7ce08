"""The web toolkit of the order tracking services' HTTP apps (FastAPI on uvicorn).

The answer envelope and error handlers (`http`), the fast path of hot routes (`fastpath`),
serving with connection limits (`serving`, `limits`), Swagger UI without a CDN (`docs`),
Prometheus metrics (`metrics`) and authentication with OpenID Connect access tokens (`auth`).
It knows no service's routes: each app tells it its public paths.
"""
