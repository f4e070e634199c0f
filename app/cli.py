"""``python -m app.cli keys create|list|revoke``: manage API keys."""

from __future__ import annotations

import argparse
import sys

from app.core.config import get_settings
from app.db import Database
from app.services.auth import KeyStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Manage the service's API keys.")
    commands = parser.add_subparsers(dest="group", required=True)
    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key, e.g. 'pacs-router'")
    keys.add_parser("list", help="list keys (prefixes only)")
    revoke = keys.add_parser("revoke", help="revoke keys by prefix")
    revoke.add_argument("prefix", help="the key's prefix as shown by 'list' (at least 6 characters)")
    args = parser.parse_args(argv)

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    database.create_schema()
    store = KeyStore(database)
    if args.action == "create":
        print(store.create(args.name))
    elif args.action == "list":
        for key in store.list():
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            print(f"{key.prefix}…  {key.name:<24} created {key.created_at:%Y-%m-%d %H:%M}  {state}")
    else:
        try:
            count = store.revoke(args.prefix)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"Revoked {count} key(s).")
        if count == 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
