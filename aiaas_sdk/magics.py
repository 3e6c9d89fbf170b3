"""``%aiaas``: drive the backend from notebook cells.

``%load_ext aiaas`` registers it; ``%aiaas?`` prints this usage. Expected
failures (no backend, unknown run, bad key) print one line, not a traceback.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ._errors import AiaasError

USAGE = """\
%aiaas connect [URL] [--key KEY]      connect (default: AIAAS_URL / config file; URL 'local' starts one)
%aiaas runs                           your runs, newest first
%aiaas train MODEL [--datamodule DM] [--max-epochs N] [--devices N] [--name NAME]
                                      train the notebook variables MODEL (and DM); shows the live dashboard
%aiaas watch RUN                      the live dashboard of a run
%aiaas logs RUN [--follow]            a run's output (--follow: until it ends)
%aiaas cancel RUN                     cancel a run
%aiaas deployments                    your deployments: name, model version, replicas, status, alerts firing
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"%aiaas {self.prog}: {message}")


def _parser(name: str, *args: tuple[tuple[str, ...], dict[str, Any]]) -> _Parser:
    parser = _Parser(prog=name, add_help=False)
    for flags, kwargs in args:
        parser.add_argument(*flags, **kwargs)
    return parser


_PARSERS = {
    "connect": _parser("connect", (("url",), {"nargs": "?"}), (("--key",), {})),
    "runs": _parser("runs"),
    "train": _parser(
        "train",
        (("model",), {}),
        (("--datamodule",), {}),
        (("--max-epochs",), {"type": int}),
        (("--devices",), {"type": int}),
        (("--name",), {}),
    ),
    "watch": _parser("watch", (("run",), {})),
    "logs": _parser("logs", (("run",), {}), (("--follow",), {"action": "store_true"})),
    "cancel": _parser("cancel", (("run",), {})),
    "deployments": _parser("deployments"),
}


@magics_class
class AiaasMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.client: Any = None

    def _client(self) -> Any:
        if self.client is None:
            import aiaas

            from ._connect import last_connected

            # The notebook's own `client = aiaas.connect(...)` (an embedded backend included)
            # comes first; the settings (AIAAS_URL, config file) only when it made none.
            self.client = last_connected() or aiaas.connect()
        return self.client

    @line_magic
    def aiaas(self, line: str) -> Any:
        words = shlex.split(line)
        if not words or words[0] not in _PARSERS:
            raise UsageError(f"%aiaas needs a command: {', '.join(_PARSERS)}. Usage:\n{USAGE}")
        args = _PARSERS[words[0]].parse_args(words[1:])
        try:
            return getattr(self, f"_cmd_{words[0]}")(args)
        except AiaasError as exc:
            # One readable line: what failed and what to do, no traceback wall.
            raise UsageError(str(exc).splitlines()[0]) from None

    aiaas.__doc__ = f"Train, watch and manage aiaas runs from a notebook.\n\n{USAGE}"

    def _cmd_connect(self, args: argparse.Namespace) -> None:
        import aiaas

        client = aiaas.connect(args.url, args.key)
        info = client.info()
        client.runs()  # checks the key now, not at the first real command
        self.client = client
        self.shell.user_ns.setdefault("client", client)
        print(f"connected to {client.url} (executor {info['executor']}, {info['gpus']} GPU(s))")

    def _cmd_runs(self, args: argparse.Namespace) -> Any:
        return self._client().runs()

    def _lookup(self, name: str, what: str) -> Any:
        if name not in self.shell.user_ns:
            raise UsageError(f"%aiaas train: no variable {name!r} in this notebook for the {what}")
        return self.shell.user_ns[name]

    def _cmd_train(self, args: argparse.Namespace) -> None:
        model = self._lookup(args.model, "model")
        datamodule = self._lookup(args.datamodule, "datamodule") if args.datamodule else None
        kwargs = {k: v for k, v in (("max_epochs", args.max_epochs), ("devices", args.devices)) if v is not None}
        try:
            run = self._client().train(model, datamodule, name=args.name, **kwargs)
        except TypeError as exc:
            raise UsageError(f"%aiaas train: {exc}") from None
        self.shell.user_ns["_aiaas_run"] = run
        run.watch()

    def _cmd_watch(self, args: argparse.Namespace) -> None:
        self._client().run(args.run).watch()

    def _cmd_logs(self, args: argparse.Namespace) -> None:
        run = self._client().run(args.run)
        if not args.follow:
            print(run.logs())
            return
        for event in run.events():
            if event.kind == "log":
                print(event.data["line"])

    def _cmd_deployments(self, args: argparse.Namespace) -> None:
        deployments = self._client().deployments()
        print(_deployments_table(deployments) if deployments else "no deployments yet: run.deploy(NAME) makes one")

    def _cmd_cancel(self, args: argparse.Namespace) -> None:
        run = self._client().run(args.run).cancel()
        print(f"{run.id}: {run.data.status.value}" + (" (stopping)" if run.data.cancel_requested and
                                                      not run.data.status.terminal else ""))


def load(ipython: Any) -> None:
    ipython.register_magics(AiaasMagics)


def unload(ipython: Any) -> None:
    magics = ipython.magics_manager.magics
    magics["line"].pop("aiaas", None)
    ipython.magics_manager.registry.pop("AiaasMagics", None)


__all__ = ["AiaasMagics", "USAGE", "load", "unload"]


def _deployments_table(deployments: list[Any]) -> str:
    rows = [("name", "status", "run", "replicas", "batch", "wait ms", "alerts")]
    for d in deployments:
        x = d.data
        rows.append((x.name, x.status, x.run_id, f"{x.ready_replicas}/{x.replicas}", str(x.max_batch_size),
                     f"{x.max_wait_ms:g}", ("FIRING: " + ", ".join(x.alerts_firing)) if x.alerts_firing else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
