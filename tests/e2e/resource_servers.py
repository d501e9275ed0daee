#!/usr/bin/env python3
"""Resource servers for the end-to-end tests that check the token themselves against the
authorization server's JWKS: a gRPC server (grpcio) and a WebSocket server (websockets).

gRPC, service e2e.Echo, raw bytes (no protobuf, so no generated code):
  Unary   answers b"echo:" + request, with trailing metadata x-served-by and x-client-id;
  Stream  answers three messages b"<i>:" + request (server streaming);
  Fail    ends with NOT_FOUND "no such thing".
  A call without a valid token (audience https://grpc.e2e.test, scope grpc:call) ends with
  UNAUTHENTICATED.
WebSocket: refuses a handshake without a valid token (audience https://ws.e2e.test, scope
  ws:chat) with 401; then answers each message with JSON {echo, exp, jti} of the handshake's
  token.

Env: IDP_PORT, GRPC_PORT, WS_PORT. Runs until terminated.
"""
import asyncio
import json
import os
from concurrent import futures
from http import HTTPStatus

import grpc
import jwt
from websockets.asyncio.server import serve

IDP = f"http://127.0.0.1:{os.environ['IDP_PORT']}"
JWKS = jwt.PyJWKClient(f"{IDP}/jwks")


def verify(authorization, audience, scope):
    if not authorization.startswith("Bearer "):
        raise ValueError("no bearer token")
    token = authorization[len("Bearer "):]
    key = JWKS.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=IDP)
    if scope not in claims.get("scope", "").split():
        raise ValueError(f"scope {scope} missing")
    return claims


def grpc_token(context):
    metadata = dict(context.invocation_metadata())
    try:
        return verify(metadata.get("authorization", ""), "https://grpc.e2e.test", "grpc:call")
    except Exception as e:  # noqa: BLE001 - any failure is an unauthenticated call
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"bad token: {e}")


def unary(request, context):
    claims = grpc_token(context)
    context.set_trailing_metadata((("x-served-by", "grpcio"), ("x-client-id", claims["client_id"])))
    return b"echo:" + request


def stream(request, context):
    grpc_token(context)
    for i in range(3):
        yield f"{i}:".encode() + request


def fail(request, context):
    grpc_token(context)
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


class Echo(grpc.GenericRpcHandler):
    def service(self, details):
        return {
            "/e2e.Echo/Unary": grpc.unary_unary_rpc_method_handler(unary),
            "/e2e.Echo/Stream": grpc.unary_stream_rpc_method_handler(stream),
            "/e2e.Echo/Fail": grpc.unary_unary_rpc_method_handler(fail),
        }.get(details.method)


async def ws_check(connection, request):
    try:
        verify(request.headers.get("Authorization", ""), "https://ws.e2e.test", "ws:chat")
    except Exception as e:  # noqa: BLE001 - any failure refuses the handshake
        return connection.respond(HTTPStatus.UNAUTHORIZED, f"bad token: {e}\n")
    return None


async def ws_echo(ws):
    token = ws.request.headers["Authorization"][len("Bearer "):]
    claims = jwt.decode(token, options={"verify_signature": False})
    async for message in ws:
        await ws.send(json.dumps({"echo": message, "exp": claims["exp"], "jti": claims["jti"]}))


async def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Echo(),))
    server.add_insecure_port(f"127.0.0.1:{os.environ['GRPC_PORT']}")
    server.start()
    async with serve(ws_echo, "127.0.0.1", int(os.environ["WS_PORT"]), process_request=ws_check):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
