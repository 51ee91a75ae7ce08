from orders_common.serving import serve

from .settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(
        "orders_api.app:create_app",
        host=settings.bind_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
