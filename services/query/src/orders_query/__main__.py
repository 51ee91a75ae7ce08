"""`python -m orders_query`: serve the query API with uvicorn."""

from orders_web.serving import serve

from .settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(
        "orders_query.app:create_app",
        settings,
        settings.query_port,
        settings.query_workers,
        settings.log_level,
        settings.log_format,
    )


if __name__ == "__main__":
    main()
