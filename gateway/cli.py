"""The ``gateway`` command: serve, chat in the terminal, validate client folders."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Annotated

import typer

from engine import load_clients

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Channel-adapter gateway.")
clients_app = typer.Typer(no_args_is_help=True, help="Client folders.")
app.add_typer(clients_app, name="clients")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    clients_dir: Annotated[Path, typer.Option(help="Folder of client folders.")] = Path("clients"),
    workers: Annotated[int, typer.Option(help="Worker processes (use Redis when > 1).")] = 1,
) -> None:
    """Serve every client folder under CLIENTS_DIR."""
    import uvicorn

    os.environ["GATEWAY_CLIENTS_DIR"] = str(clients_dir)
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ws_max_size=1 << 20,
        proxy_headers=True,
        log_level="info",
    )


@app.command()
def chat(
    client_id: Annotated[str, typer.Argument(help="Client folder name, e.g. spa-del-sol.")],
    clients_dir: Annotated[Path, typer.Option(help="Folder of client folders.")] = Path("clients"),
    channel: Annotated[
        str, typer.Option(help="Channel to act as: web | whatsapp | phone.")
    ] = "web",
) -> None:
    """Chat with a client's receptionist in the terminal, through the same engine."""
    from gateway.app import open_gateway
    from gateway.settings import Settings

    settings = Settings(GATEWAY_CLIENTS_DIR=clients_dir)

    async def run() -> None:
        async with open_gateway(settings) as gw:
            if gw.registry.get(client_id) is None:
                typer.secho(f"unknown client {client_id!r} in {clients_dir}", fg="red", err=True)
                raise typer.Exit(2)
            session_id = f"cli-{uuid.uuid4().hex[:8]}"
            typer.secho(f"Chatting with {client_id} ({channel}); Ctrl-D to quit.", dim=True)
            while True:
                try:
                    text = await asyncio.to_thread(input, "you> ")
                except (EOFError, KeyboardInterrupt):
                    typer.echo()
                    return
                if not text.strip():
                    continue
                typer.echo("bot> ", nl=False)
                async for event in gw.engine.stream_turn(
                    client_id, channel, None, session_id, text
                ):
                    if hasattr(event, "content"):
                        typer.echo(event.content, nl=False)
                    else:
                        typer.echo()
                        for i, qr in enumerate(event.quick_replies, 1):
                            typer.secho(f"     [{i}] {qr.title}", fg="cyan")
                        meta = event.metadata
                        typer.secho(
                            f"     (purpose={meta.purpose} expecting={meta.expecting})", dim=True
                        )

    asyncio.run(run())


@clients_app.command("validate")
def validate(
    clients_dir: Annotated[Path, typer.Argument(help="Folder of client folders.")] = Path(
        "clients"
    ),
) -> None:
    """Report every problem in every client folder (file, key, reason).

    Exits 1 when any folder has an error (it would be skipped at start-up).
    """
    registry = load_clients(clients_dir)
    for problem in registry.problems:
        color = "red" if problem.severity == "error" else "yellow"
        typer.secho(str(problem), fg=color)
    for client_id in sorted(registry.clients):
        typer.secho(f"ok: {client_id}", fg="green")
    if registry.errors or not registry.clients:
        raise typer.Exit(1)


def main() -> None:
    app()
