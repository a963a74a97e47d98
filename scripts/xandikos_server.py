#!/usr/bin/env python3
"""Run Xandikos multi-user on plain HTTP with Basic auth from an htpasswd file.

`xandikos multi-user --htpasswd` refuses to start without `--autocert` (a
self-signed HTTPS certificate). Tests and the demo talk plain HTTP on
loopback, so this launcher wires the same pieces the stock CLI uses
(MultiUserFilesystemBackend, MultiUserXandikosApp, basic_auth_middleware,
Xandikos 0.4.10) onto a plain aiohttp TCP site.

Each user gets /<user>/ as principal and, on the first authenticated
request, a default calendar at /<user>/calendars/calendar/.

Usage: xandikos_server.py --directory DIR --htpasswd FILE [--host H] [--port P]
                           [--user NAME:PASSWORD ...]
Entries must be {SHA} or bcrypt (Xandikos accepts nothing else); each --user
(re)writes FILE with {SHA} entries before the server starts.
"""

import argparse
import asyncio
import base64
import hashlib
import logging
import os
import signal

from aiohttp import web
from xandikos import htpasswd
from xandikos.multi_user import MultiUserFilesystemBackend, MultiUserXandikosApp
from xandikos.web import (
    WELLKNOWN_DAV_PATHS,
    RedirectDavHandler,
    basic_auth_middleware,
)


def build_app(directory: str, htpasswd_path: str) -> web.Application:
    backend = MultiUserFilesystemBackend(
        os.path.abspath(directory),
        principal_path_prefix="/",
        principal_path_suffix="/",
        create_defaults=True,
    )
    dav = MultiUserXandikosApp(backend, current_user_principal="/%(REMOTE_USER)s/")

    async def handler(request):
        return await dav.aiohttp_handler(request, "/")

    # Same layout as `xandikos multi-user` with route prefix "/": the auth
    # middleware guards the whole app, well-known paths included.
    app = web.Application(middlewares=[basic_auth_middleware(htpasswd.HtpasswdFile(htpasswd_path))])
    for path in WELLKNOWN_DAV_PATHS:
        app.router.add_route("*", path, RedirectDavHandler("/").__call__)
    app.router.add_route("*", "/{path_info:.*}", handler)
    return app


def write_htpasswd(path: str, users: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for entry in users:
            name, sep, password = entry.partition(":")
            if not name or not sep:
                raise SystemExit(f"--user {entry!r}: expected NAME:PASSWORD")
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            f.write(f"{name}:{{SHA}}{digest}\n")


async def serve(args) -> None:
    os.makedirs(args.directory, exist_ok=True)
    runner = web.AppRunner(build_app(args.directory, args.htpasswd))
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    logging.info("listening on http://%s:%d/", args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--htpasswd", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    args = parser.parse_args()
    if args.user:
        write_htpasswd(args.htpasswd, args.user)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
