"""The `runplane` command: the local stack, administration (API keys, callbacks), runs and runnables."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias, get_args

DEFAULT_STATE_DIR = Path(".runplane")
NO_DEPLOYMENT = (
    "no deployment configured: pass --local for the local stack, or set AWS_DEFAULT_REGION, AWS "
    "credentials and the RUNPLANE_* variables to the stack's outputs (docs/operations.md)"
)


def _use_local(state_dir: Path) -> None:
    """Point this process at a running local stack (its resources are listed in local.json)."""
    path = state_dir / "local.json"
    if not path.exists():
        sys.exit(f"error: {path} not found: start the local stack first (make run)")
    try:
        os.environ.update(json.loads(path.read_text())["env"])
    except (OSError, ValueError, LookupError, TypeError) as error:
        sys.exit(f"error: {path} is not a local stack's state ({error!r}): start the local stack again")


def cmd_local(args: argparse.Namespace) -> None:
    from runplane.local.poller import STOP_SIGNALS
    from runplane.local.stack import CannotStart, LocalStack, banner, say

    stack = LocalStack(
        port=args.port, workers=args.workers, state_dir=args.state_dir, sweep_seconds=args.sweep_seconds
    )
    # Handle Ctrl-C (and SIGTERM, and SIGHUP: the terminal closed) from the start: one arriving while the
    # stack starts stops it once it has started. A SIGHUP ignored from the start (nohup) stays ignored.
    stop_requested = threading.Event()
    for signum in STOP_SIGNALS:
        if not (signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN):
            signal.signal(signum, lambda *_: stop_requested.set())
    try:
        info = stack.start()
    except CannotStart as error:
        sys.exit(f"error: {error}")
    try:
        say(banner(info, stack.state_file))
        stop_requested.wait()
    finally:  # the terminal may be gone (SIGHUP): say() cannot fail, and the stack stops all the same
        say("stopping…")
        stack.stop()


def cmd_keys_create(args: argparse.Namespace) -> None:
    from runplane.domain.access import DEFAULT_SCOPES
    from runplane.logic.keys import create_key

    key = create_key(args.account, name=args.name, scopes=args.scope or DEFAULT_SCOPES)
    shown = {
        "key_id": key.key_id,
        "account_id": key.account_id,
        "organization_id": key.organization_id,
        "api_key": key.token,
    }
    print(json.dumps(shown, indent=2))
    print("Store the api_key now: it is not shown again.", file=sys.stderr)


def cmd_keys_list(args: argparse.Namespace) -> None:
    from runplane.logic.accounts import known_account
    from runplane.logic.keys import list_keys

    keys = list_keys(args.account)
    if not keys:  # none yet, or no such account
        known_account(args.account)
    for key in keys:
        print(key.model_dump_json())


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from runplane.logic.keys import revoke_key

    revoke_key(args.key_id)
    print(f"revoked {args.key_id}")


def cmd_callbacks_secret(args: argparse.Namespace) -> None:
    from runplane.logic.callbacks import callback_secret, rotate_secret

    secret = (rotate_secret if args.rotate else callback_secret)(args.account)
    print(secret.model_dump_json(indent=2))


def cmd_callbacks_replay(args: argparse.Namespace) -> None:
    from runplane.logic.callbacks import replay_dead

    replayed = replay_dead(args.since, args.until)
    print(json.dumps({"replayed": len(replayed), "webhook_ids": replayed}, indent=2))


def cmd_callbacks_dlq(args: argparse.Namespace) -> None:
    from runplane.logic.callbacks import dead_letters

    for letter in dead_letters(args.max):
        print(json.dumps(letter))


def cmd_accounts_set_credits(args: argparse.Namespace) -> None:
    from runplane.logic.accounts import set_credits

    print(set_credits(args.account, args.usd, args.runs).model_dump_json(indent=2))


def cmd_accounts_set_rate_limit(args: argparse.Namespace) -> None:
    from runplane.logic.accounts import set_rate_limit

    print(set_rate_limit(args.account, args.per_second, args.burst).model_dump_json(indent=2))


def cmd_accounts_set_concurrency(args: argparse.Namespace) -> None:
    from runplane.logic.accounts import set_concurrency

    print(set_concurrency(args.account, args.max).model_dump_json(indent=2))


def cmd_accounts_show(args: argparse.Namespace) -> None:
    from runplane.logic.accounts import describe_account, known_account

    known_account(args.account)
    print(describe_account(args.account).model_dump_json(indent=2))


def _timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ACCOUNT_HELP = "the account's id"
STATE_DIR_HELP = "where the local stack keeps its state (default: .runplane)"
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_local(commands: Commands) -> Iterable[argparse.ArgumentParser]:
    local = commands.add_parser("local", help="start the embedded local stack")
    local.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("RUNPLANE_PORT", "8787")),
        help="the API's port on 127.0.0.1 (default: RUNPLANE_PORT, else 8787)",
    )
    local.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("RUNPLANE_LOCAL_WORKERS", "4")),
        help="worker processes executing runs (default: RUNPLANE_LOCAL_WORKERS, else 4)",
    )
    local.add_argument(
        "--sweep-seconds",
        type=float,
        default=float(os.environ.get("RUNPLANE_LOCAL_SWEEP_SECONDS", "5")),
        help="how often the sweeper runs (default: RUNPLANE_LOCAL_SWEEP_SECONDS, else 5)",
    )
    local.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=STATE_DIR_HELP)
    local.set_defaults(func=cmd_local, target_local=False)
    return ()


def add_keys(commands: Commands) -> Iterable[argparse.ArgumentParser]:
    from runplane.domain.access import Scope

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key for an account; printed once")
    create.add_argument("--account", required=True, help=ACCOUNT_HELP)
    create.add_argument("--name", help="a label for the key")
    create.add_argument(
        "--scope",
        action="append",
        choices=get_args(Scope),
        help="repeat for several; default: runs:read runs:write runnables:read runnables:write",
    )
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", help="an account's keys (never their secrets)")
    listing.add_argument("--account", required=True, help=ACCOUNT_HELP)
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the key's id (key_id in `keys create`, id in `keys list`)")
    revoke.set_defaults(func=cmd_keys_revoke)
    return create, listing, revoke


def add_callbacks(commands: Commands) -> Iterable[argparse.ArgumentParser]:
    callbacks = commands.add_parser("callbacks", help="callback secrets and dead deliveries").add_subparsers(
        dest="callbacks_command", required=True
    )
    secret = callbacks.add_parser("secret", help="show an account's signing secret (created on first use)")
    secret.set_defaults(func=cmd_callbacks_secret, rotate=False)
    rotate = callbacks.add_parser("rotate", help="rotate an account's signing secret; the old one overlaps")
    rotate.set_defaults(func=cmd_callbacks_secret, rotate=True)
    for sub in (secret, rotate):
        sub.add_argument("--account", required=True, help=ACCOUNT_HELP)
    replay = callbacks.add_parser(
        "replay", help="send again every delivery that died between --since and --until"
    )
    replay.add_argument("--since", type=_timestamp, required=True, help="ISO 8601; UTC when no offset")
    replay.add_argument("--until", type=_timestamp, default=datetime.now(UTC), help="ISO 8601; default: now")
    replay.set_defaults(func=cmd_callbacks_replay)
    dlq = callbacks.add_parser("dlq", help="list what sits in the callbacks DLQ (left in place)")
    dlq.add_argument("--max", type=int, default=100, help="messages to list at most (default: 100)")
    dlq.set_defaults(func=cmd_callbacks_dlq)
    return secret, rotate, replay, dlq


def add_accounts(commands: Commands) -> Iterable[argparse.ArgumentParser]:
    accounts = commands.add_parser("accounts", help="budgets and limits").add_subparsers(
        dest="accounts_command", required=True
    )
    credits = accounts.add_parser("set-credits", help="set an account's budgets (omit one to remove it)")
    credits.add_argument("--usd", type=float, help="budget in USD of recorded run cost")
    credits.add_argument("--runs", type=int, help="budget in runs")
    credits.set_defaults(func=cmd_accounts_set_credits)
    rate = accounts.add_parser("set-rate-limit", help="the account's per-key rate limit (omit both: default)")
    rate.add_argument("--per-second", type=float, help="requests a second each key may make")
    rate.add_argument("--burst", type=int, help="0 turns the limit off for this account")
    rate.set_defaults(func=cmd_accounts_set_rate_limit)
    concurrency = accounts.add_parser(
        "set-concurrency", help="how many of the account's runs execute at once (omit --max: default)"
    )
    concurrency.add_argument("--max", type=int, help="0 removes the limit for this account")
    concurrency.set_defaults(func=cmd_accounts_set_concurrency)
    show = accounts.add_parser("show", help="an account's budgets, usage and limits")
    show.set_defaults(func=cmd_accounts_show)
    for sub in (credits, rate, concurrency, show):
        sub.add_argument("--account", required=True, help=ACCOUNT_HELP)
    return credits, rate, concurrency, show


def add_api(commands: Commands) -> Iterable[argparse.ArgumentParser]:
    """`runs` and `runnables`, spoken through the API's client (runplane.cli_runs)."""
    from runplane import cli_runs

    cli_runs.add_runs(commands)
    cli_runs.add_runnables(commands)
    return ()


# Each adds a command group and returns its commands that act on a deployment or, with --local, on the
# running local stack.
COMMAND_GROUPS: list[Callable[[Commands], Iterable[argparse.ArgumentParser]]] = [
    add_local,
    add_keys,
    add_callbacks,
    add_accounts,
    add_api,
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="runplane", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    for add_group in COMMAND_GROUPS:
        for sub in add_group(commands):
            sub.add_argument(
                "--local", dest="target_local", action="store_true", help="act on the running local stack"
            )
            sub.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=STATE_DIR_HELP)
    return root


def unreachable(error: Exception) -> str | None:
    """One line for an error that says the deployment cannot be reached as configured (or the settings
    are invalid); None for others."""
    from botocore import exceptions as aws
    from pydantic import ValidationError

    if isinstance(error, ValidationError) and error.title == "Settings":
        issues = [_setting_issue(issue) for issue in error.errors()]
        return f"invalid setting{'s' if len(issues) > 1 else ''}: " + "; ".join(issues)
    if isinstance(error, aws.NoRegionError):
        if not any(value for name, value in os.environ.items() if name.startswith("RUNPLANE_")):
            return NO_DEPLOYMENT  # nothing at all says where a deployment is
        return "no AWS region configured: set AWS_DEFAULT_REGION (or a profile's region), or pass --local"
    if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --local"
    if isinstance(error, aws.ProfileNotFound):
        return f"AWS profile {error.kwargs['profile']!r} not found: check AWS_PROFILE and ~/.aws/config, or pass --local"
    if isinstance(error, aws.SSOError | aws.TokenRetrievalError | aws.CredentialRetrievalError):
        return f"AWS credentials could not be loaded: {_one_line(error)} (expired? `aws sso login`), or pass --local"
    if isinstance(error, aws.ConnectionError | aws.HTTPClientError):  # refused, timed out, closed, TLS
        endpoint = error.kwargs.get("endpoint_url") or error.kwargs.get("proxy_url") or "AWS"
        tls = f" (TLS: {error.kwargs.get('error')})" if isinstance(error, aws.SSLError) else ""
        return f"cannot reach {endpoint}{tls}: check the network, AWS_ENDPOINT_URL or --local"
    if isinstance(error, ValueError) and str(error).startswith("Invalid endpoint: "):  # botocore's
        url = str(error).removeprefix("Invalid endpoint: ")
        return f"invalid AWS endpoint {url!r}: AWS_ENDPOINT_URL needs its scheme (http://… or https://…)"
    if isinstance(error, aws.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException" or "NonExistentQueue" in code or code == "QueueDoesNotExist":
            return (
                f"a table or queue of the deployment was not found ({error.operation_name}: {message}): set "
                "the RUNPLANE_* variables to the stack's outputs (docs/operations.md), or pass --local"
            )
        return f"AWS refused {error.operation_name}: {code}: {message}"
    if isinstance(error, aws.BotoCoreError):
        return f"AWS: {_one_line(error)}"
    return None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _setting_issue(issue: dict) -> str:
    """`RUNPLANE_NAME='value': why` (the value when the whole variable is refused, else where in it)."""
    name, *inside = issue["loc"]
    variable = f"RUNPLANE_{str(name).upper()}"
    where = f" at {'.'.join(map(str, inside))}" if inside else f"={os.environ.get(variable)!r}"
    return f"{variable}{where}: {issue['msg']}"


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.target_local:
        _use_local(args.state_dir)
    from runplane.domain.errors import RunplaneError

    try:
        args.func(args)
    except RunplaneError as error:
        sys.exit(f"error: {error.message}")
    except Exception as error:
        if (line := unreachable(error)) is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    main()
