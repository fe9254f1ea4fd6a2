"""A stand-in for Alloy's Server Management API (`/api/servers`) on 127.0.0.1, for the `servers` commands' tests.

It follows Alloy's public documentation: Bearer API key (each key belongs to one
user), `x-alloy-userid` or `x-alloy-user-token` optional, names unique per user
(409), 403 for another user's server, 404, 400 for invalid input, a PUT whose
`restrictions` replace the old ones whole, the access token only on creation —
and, to keep the client honest, a field the documentation does not list in
every response. A control endpoint scripts 429s with `Retry-After`.

    python -m tests.management_server --port 0 --key KEY=USER [--key KEY2=USER2]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import secrets
import socket
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODES = ("allowlist", "blocklist")
LISTS = {"connectors": ("allowedIds", "blockedIds"), "actions": ("allowedActions", "blockedActions"),
         "users": ("allowedIds", "blockedIds")}


class Platform:
    def __init__(self, keys: dict[str, str], base: str) -> None:
        self.keys = keys
        self.base = base
        self.servers: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.requests: list[dict[str, Any]] = []
        self.rate_limited = 0
        self.limit_status = 429
        self.retry_after = "1"
        self.lost_answers = 0  # deletions done whose answer is then lost (a 502 from a gateway)

    def user_of(self, request: Request) -> tuple[str | None, Response | None]:
        auth = request.headers.get("authorization", "")
        user = self.keys.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if user is None:
            return None, error(401, "Invalid or missing API key")
        token = request.headers.get("x-alloy-user-token")
        if token:
            try:
                payload = token.split(".")[1]
                user = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
            except (IndexError, ValueError, KeyError):
                return None, error(401, "Invalid user token")
        elif request.headers.get("x-alloy-userid"):
            user = request.headers["x-alloy-userid"]
        return user, None


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "statusCode": status, "requestId": secrets.token_hex(4)}, status,
                        headers=headers)


def public(server: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in server.items() if k not in ("accessToken", "accessUrl", "owner")}


def check_restrictions(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "restrictions must be an object"
    for category, rule in value.items():
        if category not in LISTS:
            return f"unknown restriction category {category!r}"
        if not isinstance(rule, dict) or rule.get("mode") not in MODES:
            return f"restrictions.{category}.mode must be allowlist or blocklist"
        for key in LISTS[category]:
            if key in rule and not (isinstance(rule[key], list) and all(isinstance(i, str) for i in rule[key])):
                return f"restrictions.{category}.{key} must be a list of strings"
    return None


def build_app(platform: Platform) -> Starlette:
    async def gate(request: Request) -> tuple[str | None, Response | None]:
        platform.requests.append({"method": request.method, "path": request.url.path,
                                  "user_token": bool(request.headers.get("x-alloy-user-token")),
                                  "userid": request.headers.get("x-alloy-userid")})
        if platform.rate_limited > 0:
            platform.rate_limited -= 1
            return None, error(platform.limit_status, "Too many requests" if platform.limit_status == 429
                               else "Service unavailable", {"retry-after": platform.retry_after})
        return platform.user_of(request)

    async def body_of(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None, error(400, "Body is not JSON")
        if not isinstance(body, dict):
            return None, error(400, "Body must be an object")
        return body, None

    def validate(body: dict[str, Any], owner: str, exclude: str | None = None) -> Response | None:
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not 1 <= len(name) <= 100:
                return error(400, "name must be 1-100 characters")
            if any(s["name"] == name and s["owner"] == owner and s["serverId"] != exclude
                   for s in platform.servers.values()):
                return error(409, f"A server named {name!r} already exists")
        days = body.get("tokenExpiresInDays")
        if days is not None and not (isinstance(days, int) and 1 <= days <= 365):
            return error(400, "tokenExpiresInDays must be between 1 and 365")
        if "restrictions" in body:
            problem = check_restrictions(body["restrictions"])
            if problem:
                return error(400, problem)
        return None

    async def collection(request: Request) -> Response:
        user, refused = await gate(request)
        if refused is not None:
            return refused
        if request.method == "GET":
            mine = [public(s) for s in platform.servers.values() if s["owner"] == user]
            return JSONResponse({"servers": mine, "count": len(mine), "nextCursor": None})
        body, bad = await body_of(request)
        if bad is not None or body is None:
            return bad or error(400, "no body")
        if "name" not in body:
            return error(400, "name is required")
        invalid = validate(body, str(user))
        if invalid is not None:
            return invalid
        server_id = f"srv_{next(platform.ids):04d}"
        token = "mcp_tok_" + secrets.token_hex(12)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        restrictions = body.get("restrictions") or {}
        server = {
            "serverId": server_id, "name": body["name"], "description": body.get("description", ""),
            "customInstructions": body.get("customInstructions"), "mode": "public" if body.get("isPublic")
            else "private", "url": f"{platform.base}/mcp/{server_id}",
            "accessUrl": f"{platform.base}/mcp/{server_id}/{token}", "accessToken": token,
            "restrictions": restrictions, "hasRestrictions": bool(restrictions), "createdAt": now,
            "updatedAt": now, "tokenExpiresAt": "2027-01-01T00:00:00Z", "owner": user,
        }
        platform.servers[server_id] = server
        return JSONResponse({k: v for k, v in server.items() if k != "owner"}, 201)

    async def item(request: Request) -> Response:
        user, refused = await gate(request)
        if refused is not None:
            return refused
        server = platform.servers.get(request.path_params["server_id"])
        if server is None:
            return error(404, "Server not found")
        if server["owner"] != user:
            return error(403, "You do not have access to this server")
        if request.method == "GET":
            return JSONResponse(public(server))
        if request.method == "DELETE":
            del platform.servers[server["serverId"]]
            if platform.lost_answers > 0:
                platform.lost_answers -= 1
                return error(502, "Bad gateway")
            return JSONResponse({"message": "Server deleted successfully", "serverId": server["serverId"],
                                 "deletedAt": "now"})
        body, bad = await body_of(request)
        if bad is not None or body is None:
            return bad or error(400, "no body")
        invalid = validate(body, str(user), exclude=server["serverId"])
        if invalid is not None:
            return invalid
        for key in ("name", "description", "customInstructions"):
            if key in body:
                server[key] = body[key]
        if "isPublic" in body:
            server["mode"] = "public" if body["isPublic"] else "private"
        if "restrictions" in body:  # replaces the old restrictions whole
            server["restrictions"] = body["restrictions"]
            server["hasRestrictions"] = bool(body["restrictions"])
        server["updatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return JSONResponse(public(server))

    async def control(request: Request) -> Response:
        command = request.path_params["command"]
        payload = json.loads(await request.body() or b"{}")
        if command == "rate_limit":
            platform.rate_limited = int(payload.get("times", 1))
            platform.limit_status = int(payload.get("status", 429))
            platform.retry_after = str(payload.get("retry_after", "1"))
        elif command == "lose_answers":
            platform.lost_answers = int(payload.get("times", 1))
        elif command == "reset":
            platform.servers.clear()
            platform.requests.clear()
            platform.rate_limited = 0
            platform.lost_answers = 0
        return JSONResponse({"requests": platform.requests,
                             # The test's own view: the owner and the issued token too (the API never lists them).
                             "servers": {k: public(v) | {"owner": v["owner"], "accessToken": v["accessToken"]}
                                         for k, v in platform.servers.items()}})

    return Starlette(routes=[
        Route("/api/servers", collection, methods=["GET", "POST"]),
        Route("/api/servers/{server_id}", item, methods=["GET", "PUT", "DELETE"]),
        Route("/_control/{command}", control, methods=["POST"]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", default=[], help="API_KEY=USER")
    options = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", options.port))
    sock.listen(64)
    port = sock.getsockname()[1]
    keys = dict(item.split("=", 1) for item in options.key)
    app = build_app(Platform(keys, f"http://127.0.0.1:{port}"))
    print(f"PORT {port}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[sock])


if __name__ == "__main__":
    main()
