"""`make token USER=7 [ROLE=staff|service]`: an access token of the running stack's provider.

Reads the provider `make up AUTH_MODE=oidc` started (`.data/stack/oidc.json`, or
`--provider`) and prints one access token, on the last line:

    curl -H "Authorization: Bearer $(make -s token USER=7)" http://localhost:8001/api/orders
"""

import argparse
import sys
from pathlib import Path

from .oidc import Provider
from .stack import ROOT

PROVIDER_FILE = ROOT / ".data" / "stack" / "oidc.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--user", type=int, help="the user id the token acts as (a customer's; optional for staff)"
    )
    parser.add_argument("--role", choices=["customer", "staff", "service"], default="customer")
    parser.add_argument("--provider", type=Path, default=PROVIDER_FILE, help="the provider's file")
    args = parser.parse_args()
    if args.role == "customer" and (args.user is None or args.user < 1):
        parser.error("a customer's token needs USER=<id> (1 or more): make token USER=7")
    if not args.provider.exists():
        sys.exit(f"no provider at {args.provider}: start the stack with `make up AUTH_MODE=oidc` first")
    provider = Provider.load(args.provider)
    try:
        token = (
            provider.service_token() if args.role == "service" else provider.user_token(args.user, args.role)
        )
    except Exception as exc:  # noqa: BLE001 - one line for a person, not a traceback
        sys.exit(f"the provider at {provider.issuer} gave no token ({exc}): is `make up AUTH_MODE=oidc` up?")
    print(token)


if __name__ == "__main__":
    main()
