"""`python -m orders_api`: serve the ingest API with uvicorn."""

from orders_web.serving import serve

from .settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(
        "orders_api.app:create_app",
        settings,
        settings.api_port,
        settings.api_workers,
        settings.log_level,
        settings.log_format,
    )


if __name__ == "__main__":
    main()
