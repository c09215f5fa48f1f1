"""`runplane runs …` and `runplane runnables …`: the API, through runplane_client (docs/client.md, "The CLI").

runplane_client is imported when one of these commands runs, never when this module is: `runplane keys …`
and the Lambda functions do without it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runplane import cli_output as out

NOT_INSTALLED = "error: runplane_client is not installed: pip install -e clients/python"
NO_API = (
    "no API configured: pass --api-url and --api-key, set RUNPLANE_API_URL/RUNPLANE_API_KEY, "
    "or start the local stack"
)
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
PAGE = 100  # the API's largest page
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Command = Callable[[Any, argparse.Namespace], int | None]  # (client, args) -> exit status


# --- arguments ---


def _json(text: str) -> Any:
    """JSON, or `@FILE`: the JSON in FILE."""
    try:
        return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {error.strerror}") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None


def _json_object(text: str) -> dict[str, Any]:
    value = _json(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def _assignment(text: str) -> tuple[str, Any]:
    """`key=value`, the value as JSON when it parses, else as the text."""
    key, equals, value = text.partition("=")
    if not (key and equals):
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _common() -> argparse.ArgumentParser:
    """The options of every command: where the API is, and --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        metavar="URL",
        help="the API's base URL (default: RUNPLANE_API_URL, else the local stack)",
    )
    common.add_argument(
        "--api-key",
        metavar="KEY",
        help="the API key (default: RUNPLANE_API_KEY, else the local stack's; a flag shows in `ps`)",
    )
    common.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the local stack's state folder to take the URL and key from when neither flag nor variable "
        "gives them (default: .runplane in this folder or the nearest one above)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    common.set_defaults(target_local=False)  # cli.main's --local: these commands find the stack themselves
    return common


def _commands(commands: Any, group: str, help: str) -> Callable[[str, Command, str], argparse.ArgumentParser]:
    """The command group `group`; what it answers adds a command to it, with the common options."""
    subs = commands.add_parser(group, help=help).add_subparsers(dest=f"{group}_command", required=True)
    common = _common()

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        sub = subs.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(func=_api(command))
        return sub

    return add


def add_runs(commands: Any) -> None:
    add = _commands(commands, "runs", "start, follow, list and cancel runs (through the API)")
    run_id = {"help": "the run's id"}
    wait_timeout = {
        "type": float,
        "help": "give up waiting after SECONDS (exit 1; the run goes on); default: wait to the end",
    }
    start = add("start", cmd_start, "start a run and print its id at once")
    run = add("run", cmd_run, "start a run and wait for its end; exit 0 if it completed, else 1")
    for sub in (start, run):
        sub.add_argument("runnable", help="the runnable's id or name")
        sub.add_argument(
            "--input",
            action="append",
            type=_assignment,
            metavar="KEY=VALUE",
            help="an input (repeatable); VALUE is parsed as JSON when it parses, else taken as text",
        )
        sub.add_argument(
            "--inputs",
            type=_json_object,
            metavar="JSON",
            help="the inputs as a JSON object, or @FILE for one in FILE (--input keys override)",
        )
        sub.add_argument(
            "--idempotency-key", metavar="KEY", help="starting again with the same key starts no second run"
        )
        sub.add_argument(
            "--callback-url", metavar="URL", help="where the run's end is POSTed (signed; docs/callbacks.md)"
        )
        sub.add_argument(
            "--timeout", type=int, metavar="SECONDS", help="the run's time limit (default: the runnable's)"
        )
    run.add_argument("--wait-timeout", metavar="SECONDS", **wait_timeout)
    add("get", cmd_get, "a run's state now").add_argument("run_id", **run_id)
    wait = add("wait", cmd_wait, "wait for a run's end; exit 0 if it completed, else 1")
    wait.add_argument("run_id", **run_id)
    wait.add_argument("--wait-timeout", metavar="SECONDS", **wait_timeout)
    listing = add("list", cmd_list, "the account's runs, newest first")
    listing.add_argument(
        "--status", help="only runs with this status: waiting, running, completed, failed, cancelled, timeout"
    )
    listing.add_argument("--runnable", help="only runs of this runnable (id or name)")
    listing.add_argument(
        "--limit", type=int, default=50, help="list at most this many, paging as needed (default: 50; 0: all)"
    )
    add("cancel", cmd_cancel, "cancel a run (a running one ends cancelled shortly)").add_argument(
        "run_id", **run_id
    )
    logs = add("logs", cmd_logs, "a run's log lines")
    logs.add_argument("run_id", **run_id)
    logs.add_argument("--follow", action="store_true", help="keep reading until the run has ended")
    follow = add(
        "follow", cmd_follow, "print a run's events and log lines as they come, until its end; exit as `wait`"
    )
    follow.add_argument("run_id", **run_id)


def add_runnables(commands: Any) -> None:
    add = _commands(commands, "runnables", "register, list, read and delete runnables (through the API)")
    runnable = {"help": "the runnable's id or name"}
    create = add("create", cmd_create_runnable, "register a runnable from flags, a spec file, or both")
    create.add_argument("--name", help="unique in the account")
    create.add_argument("--kind", help="python, http, lambda or bedrock")
    create.add_argument("--config", type=_json_object, metavar="JSON", help="the kind's config (or @FILE)")
    create.add_argument("--input-schema", type=_json_object, metavar="JSON", help="JSON Schema of the inputs")
    create.add_argument(
        "--output-schema", type=_json_object, metavar="JSON", help="JSON Schema of the outputs"
    )
    create.add_argument("--timeout", type=int, metavar="SECONDS", help="a run's time limit")
    create.add_argument(
        "--max-concurrency", type=int, metavar="N", help="how many of its runs execute at once"
    )
    create.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeatable)")
    create.add_argument(
        "--file",
        type=_json_object,
        metavar="SPEC",
        help="a JSON object with the fields of POST /v1/runnables (@FILE or inline); flags override it",
    )
    add("list", cmd_list_runnables, "every runnable of the account")
    add("get", cmd_get_runnable, "one runnable").add_argument("runnable", **runnable)
    add("delete", cmd_delete_runnable, "delete a runnable").add_argument("runnable", **runnable)


# --- running a command ---


def _api(command: Command) -> Callable[[argparse.Namespace], None]:
    """`command` with a client; what goes wrong, one line on stderr and exit 1 (Ctrl-C: 130, quietly)."""

    def run(args: argparse.Namespace) -> None:
        try:
            import runplane_client  # noqa: F401
        except ImportError:
            sys.exit(NOT_INSTALLED)
        client = None
        try:
            client = _connect(args)
            status = command(client, args)
        except KeyboardInterrupt:
            sys.exit(INTERRUPTED)
        except BrokenPipeError:  # `| head`: what is left to print goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as error:
            if (line := _failure(error, args, client)) is None:
                raise
            sys.exit(f"error: {line}")
        finally:
            if client is not None:
                client.close()
        sys.exit(status or 0)

    return run


def _connect(args: argparse.Namespace) -> Any:
    """The client: the flags, else the variables, else the local stack (of --state-dir when given)."""
    from runplane_client import ConfigurationError, Runplane

    url, key = args.api_url, args.api_key
    if args.state_dir is not None and not (url or os.environ.get("RUNPLANE_API_URL")):
        try:
            local = json.loads((args.state_dir / "local.json").read_text())
        except (OSError, ValueError):
            raise ConfigurationError(NO_API) from None
        url, key = local.get("api_url"), key or os.environ.get("RUNPLANE_API_KEY") or local.get("api_key")
    return Runplane(url, key)


def _failure(error: Exception, args: argparse.Namespace, client: Any) -> str | None:
    """The line saying what went wrong; None for what is not a refusal or a misconfiguration."""
    from pydantic import ValidationError
    from runplane_client import ApiConnectionError, ConfigurationError, RunplaneError

    if isinstance(error, ConfigurationError):
        url = args.api_url or os.environ.get("RUNPLANE_API_URL")
        return f"no API key for {url}: pass --api-key or set RUNPLANE_API_KEY" if url else NO_API
    if isinstance(error, ApiConnectionError):
        local = urlsplit(client.api_url).hostname in LOOPBACK
        hint = "is the local stack running? (make run)" if local else "check the URL and the network"
        return f"cannot reach the API at {client.api_url}: {hint}"
    if isinstance(error, RunplaneError):
        issues = "".join(f"; {issue.get('field')}: {issue.get('message')}" for issue in error.issues)
        return f"{error.message}{issues} ({error.code})"
    if isinstance(error, ValidationError):  # a request the client refused to send
        issues = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
        return f"invalid {error.title}: {issues}"
    return None


def _show(args: argparse.Namespace, model: Any, summary: Callable[[Any], str]) -> None:
    print(model.model_dump_json(indent=2) if args.json else summary(model), flush=True)


def _lines(args: argparse.Namespace, models: Any, human: Callable[[Any], Any] | None = None) -> None:
    """JSON lines, or each model's lines of text (`human`), as they come."""
    for model in models:
        for line in [model.model_dump_json()] if args.json or human is None else human(model):
            print(line, flush=True)


def _ended(args: argparse.Namespace, wait: Callable[[], Any]) -> int:
    """Show the state `wait` answers; exit 0 if the run completed. Past --wait-timeout: the state last read,
    then the error."""
    from runplane_client import WaitTimeout

    try:
        state = wait()
    except WaitTimeout as late:
        _show(args, late.run, out.run_summary)
        sys.exit(
            f"error: run {late.run.id} had not ended after {args.wait_timeout:g} s; it goes on ({late.code})"
        )
    _show(args, state, out.run_summary)
    return _status(state)


def _status(state: Any) -> int:
    return 0 if state.status == "completed" else 1


# --- runs ---


def _start(args: argparse.Namespace) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The runnable and inputs, and the options of a start."""
    inputs = {**(args.inputs or {}), **dict(args.input or [])}
    given = {"idempotency_key": args.idempotency_key, "callback_url": args.callback_url}
    options = {name: value for name, value in given.items() if value is not None}
    if args.timeout is not None:
        options["timeout_seconds"] = args.timeout
    return (args.runnable, inputs), options


def cmd_start(client: Any, args: argparse.Namespace) -> None:
    positional, options = _start(args)
    started = client.runs.start(*positional, **options)
    print(started.model_dump_json(indent=2) if args.json else started.id)


def cmd_run(client: Any, args: argparse.Namespace) -> int:
    positional, options = _start(args)
    return _ended(args, lambda: client.runs.run(*positional, timeout=args.wait_timeout, **options))


def cmd_get(client: Any, args: argparse.Namespace) -> None:
    _show(args, client.runs.get(args.run_id), out.run_summary)


def cmd_wait(client: Any, args: argparse.Namespace) -> int:
    return _ended(args, lambda: client.runs.wait(args.run_id, args.wait_timeout))


def cmd_cancel(client: Any, args: argparse.Namespace) -> None:
    _show(args, client.runs.cancel(args.run_id), out.run_summary)


def cmd_list(client: Any, args: argparse.Namespace) -> None:
    limit = args.limit if args.limit > 0 else None
    pages = client.runs.list(status=args.status, runnable=args.runnable, limit=min(limit or PAGE, PAGE))
    runs = itertools.islice(pages, limit)
    if args.json:
        _lines(args, runs)
        return
    runs = list(runs)
    names = {r.id: r.name for r in client.runnables.list(limit=PAGE)} if runs else {}
    print(out.runs_table(runs, names))


def cmd_logs(client: Any, args: argparse.Namespace) -> None:
    _lines(args, client.runs.logs(args.run_id, follow=args.follow), lambda line: [out.log_line(line)])


def cmd_follow(client: Any, args: argparse.Namespace) -> int:
    _lines(args, client.runs.events(args.run_id), out.event_lines)
    state = client.runs.get(args.run_id)
    if not args.json:  # the JSON lines end with the run's last status event
        print(out.run_summary(state))
    return _status(state)


# --- runnables ---


def _runnable(client: Any, ref: str) -> Any:
    from runplane_client.runnables import is_id

    return client.runnables.get(ref) if is_id(ref) else client.runnables.get_by_name(ref)


def cmd_create_runnable(client: Any, args: argparse.Namespace) -> None:
    flags = {
        "name": args.name,
        "kind": args.kind,
        "config": args.config,
        "input_schema": args.input_schema,
        "output_schema": args.output_schema,
        "timeout_seconds": args.timeout,
        "max_concurrency": args.max_concurrency,
        "tags": args.tag,
    }
    spec = {**(args.file or {}), **{name: value for name, value in flags.items() if value is not None}}
    if missing := [f"--{name}" for name in ("name", "kind", "config") if name not in spec]:
        sys.exit(f"error: {', '.join(missing)} missing: give them as flags or in --file")
    _show(args, client.runnables.create(**spec), out.runnable_summary)


def cmd_list_runnables(client: Any, args: argparse.Namespace) -> None:
    runnables = client.runnables.list(limit=PAGE)
    if args.json:
        _lines(args, runnables)
    else:
        print(out.runnables_table(list(runnables)))


def cmd_get_runnable(client: Any, args: argparse.Namespace) -> None:
    _show(args, _runnable(client, args.runnable), out.runnable_summary)


def cmd_delete_runnable(client: Any, args: argparse.Namespace) -> None:
    runnable = _runnable(client, args.runnable)
    client.runnables.delete(runnable.id)
    deleted = {"id": runnable.id, "name": runnable.name, "deleted": True}
    print(json.dumps(deleted, indent=2) if args.json else f"deleted {runnable.name} ({runnable.id})")
