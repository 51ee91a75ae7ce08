from orders_common.serving import serve

from .settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(
        "orders_query.app:create_app",
        host=settings.bind_host,
        port=settings.query_port,
        workers=settings.query_workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
